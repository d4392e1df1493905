"""The limiter's Lua: ``bucket.lua`` (one script, one operation per call), read once per process
and run with EVALSHA (``redis.register_script`` loads it on first use per server).

>>> "local OP = ARGV[1]" in bucket_script()
True
"""

from __future__ import annotations

from shared.lua import load_lua


def bucket_script() -> str:
    return load_lua("shared.limiter", "bucket.lua")
