"""Lua scripts live in ``.lua`` files next to the module that owns them; read once per process.

>>> "redis.call" in load_lua("shared", "jobstate_submit.lua")
True
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_lua(package: str, name: str) -> str:
    """The text of ``<package>/<name>`` (cached: each script is read from disk once)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")
