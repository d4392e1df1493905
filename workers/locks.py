"""Leases: keep the broker messages and job locks this process holds alive while it works.

Why: a short Redis ``visibility_timeout`` brings a dead worker's jobs back in seconds, but a live
worker may hold a message far longer (waiting for rate-limit capacity, slow API answers). So every
``HEARTBEAT_SECONDS`` each worker re-stamps its messages in kombu's ``unacked_index`` (``ZADD XX``:
only entries that still exist) and refreshes its job locks. A job lock (``imgq:lock:<job_id>``)
makes sure a redelivered copy never runs while the first holder is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

LEASE_SECONDS = 20  # broker visibility timeout and job-lock TTL
HEARTBEAT_SECONDS = 4  # well under LEASE_SECONDS: several missed beats before a lease lapses
LOCK_PREFIX = "imgq:lock:"
UNACKED_INDEX = "unacked_index"  # kombu's default unacked_index_key

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


async def delete_if_owner(client: aioredis.Redis, key: str, owner: str) -> bool:
    """Delete ``key`` only while it still holds ``owner`` (atomic compare-and-delete)."""
    return bool(await client.register_script(_RELEASE)(keys=[key], args=[owner]))


class JobLocks:
    """One owner per job at a time, across the fleet."""

    def __init__(self, client: aioredis.Redis, *, lease_seconds: int = LEASE_SECONDS) -> None:
        self._r = client
        self._lease_ms = lease_seconds * 1000
        self._owner = uuid.uuid4().hex
        self._held: set[str] = set()
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)

    async def try_acquire(self, job_id: str) -> bool:
        ok = await self._r.set(LOCK_PREFIX + job_id, self._owner, nx=True, px=self._lease_ms)
        if ok:
            self._held.add(job_id)
        return bool(ok)

    async def release(self, job_id: str) -> None:
        self._held.discard(job_id)
        with contextlib.suppress(RedisError):
            await self._release(keys=[LOCK_PREFIX + job_id], args=[self._owner])

    async def refresh_all(self) -> None:
        for job_id in list(self._held):
            await self._refresh(keys=[LOCK_PREFIX + job_id], args=[self._owner, self._lease_ms])


class Heartbeat:
    """Background task on the worker loop: refresh message leases and job locks."""

    def __init__(
        self,
        locks: JobLocks,
        broker: aioredis.Redis | None,
        delivery_tags: Callable[[], Iterable[str]],
        *,
        interval: float = HEARTBEAT_SECONDS,
        unacked_index: str = UNACKED_INDEX,
    ) -> None:
        self._locks = locks
        self._broker = broker
        self._tags = delivery_tags
        self._interval = interval
        self._index = unacked_index
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="imgq-heartbeat")

    async def beat(self) -> None:
        await self._locks.refresh_all()
        tags = list(self._tags())
        if self._broker is not None and tags:
            now = time.time()
            await self._broker.zadd(self._index, dict.fromkeys(tags, now), xx=True)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                await self.beat()
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
