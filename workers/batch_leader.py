"""One batcher per fleet: a Redis lease on ``imgq:bq:leader`` that the leader keeps renewing.

Every worker runs a batcher; only the holder of the lease works. A leader that dies stops
renewing and another worker takes over within ``lease_seconds``. Each batch step is also a
compare-and-set on the batch's state (shared/batch_store.py), so a paused old leader that wakes
up cannot repeat a step the new one took.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis.asyncio as aioredis

LEADER_KEY = "imgq:bq:leader"
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leadership:
    def __init__(self, r: aioredis.Redis, *, lease_seconds: float = 15.0) -> None:
        self._r = r
        self._ms = int(lease_seconds * 1000)
        # Who leads, readable by operators (and tests): host, pid, then a unique part.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._renew = r.register_script(_RENEW)
        self._resign = r.register_script(_RESIGN)

    async def hold(self) -> bool:
        """Take or renew the lease; True while this process is the leader."""
        if await self._renew(keys=[LEADER_KEY], args=[self.token, self._ms]):
            return True
        return bool(await self._r.set(LEADER_KEY, self.token, nx=True, px=self._ms))

    async def is_mine(self) -> bool:
        """Checked in Redis right before a paid or side-effecting call: a process paused past
        its lease (and then resumed) must not act on a step the new leader owns."""
        raw = await self._r.get(LEADER_KEY)
        return raw is not None and (raw.decode() if isinstance(raw, bytes) else raw) == self.token

    async def resign(self) -> None:
        await self._resign(keys=[LEADER_KEY], args=[self.token])
