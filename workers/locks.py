"""Leases with fencing tokens: one owner per job at a time, and a lapsed owner can do no harm.

Each delivery takes the job's lease (``imgq:lock:<job_id>`` = ``<owner>:<token>``, expiring on
Redis's clock) with a fresh fencing token (one ``HINCRBY`` on the job state, see
shared/jobstate.py). Right before each paid call the worker proves in one script that its token
is still the current one (``fence``); result writes go through ``commit``, which applies the
fencing rules in the same atomic step as the write (workers/lease_commit.lua). So a worker that
was paused, partitioned or slowed past its lease never makes a new call for the job and never
overwrites a newer owner's result.

The heartbeat (every ``HEARTBEAT_SECONDS``) extends the leases this process holds and re-stamps
its broker messages in kombu's ``unacked_index`` (``ZADD XX``), with Redis TIME, never the host's
clock. kombu's restore scan compares those stamps with the scanning host's clock; a message
brought back early by a skewed clock is harmless: its new delivery finds the lease held.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.broker import HEARTBEAT_SECONDS, LEASE_SECONDS
from shared.jobstate import OPEN_JOBS, state_key
from shared.loop_thread import cancel_task
from shared.lua import load_lua

LOCK_PREFIX = "imgq:lock:"
UNACKED_INDEX = "unacked_index"  # kombu's default unacked_index_key
DEFAULT_STATE_TTL = 7 * 24 * 3600

__all__ = [
    "HEARTBEAT_SECONDS",
    "LEASE_SECONDS",
    "LOCK_PREFIX",
    "Heartbeat",
    "JobLocks",
    "Lease",
    "LeaseLostError",
    "delete_if_owner",
]


class LeaseLostError(Exception):
    """This worker no longer holds the job's lease: it must not call the API or write."""


@dataclass
class Lease:
    job_id: str
    token: int
    holder: str  # "<owner>:<token>", the lock's value while the lease is ours
    deliveries: int  # deliveries that took the lease, this one included
    now: float  # Redis time (unix s) when it was taken
    expires_at: float | None  # the job's deadline, if it has one
    lost: bool = False
    released: bool = False  # given back (by a final commit): nothing left to release


async def delete_if_owner(client: aioredis.Redis, key: str, owner: str) -> bool:
    """Delete ``key`` only while it still holds ``owner`` (atomic compare-and-delete)."""
    script = client.register_script(load_lua("workers", "compare_delete.lua"))
    return bool(await script(keys=[key], args=[owner]))


def _keys(job_id: str) -> list[str]:
    return [LOCK_PREFIX + job_id, state_key(job_id), OPEN_JOBS]


class JobLocks:
    """Take, prove, extend and give back job leases; apply the fencing rules to result writes."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        lease_seconds: float = LEASE_SECONDS,
        state_ttl_seconds: int = DEFAULT_STATE_TTL,
    ) -> None:
        self._r = client
        self._lease_ms = int(lease_seconds * 1000)
        self._state_ttl = state_ttl_seconds
        self._owner = uuid.uuid4().hex
        self._held: dict[str, Lease] = {}
        self._acquire = client.register_script(load_lua("workers", "lease_acquire.lua"))
        self._fence = client.register_script(load_lua("workers", "lease_fence.lua"))
        self._release = client.register_script(load_lua("workers", "lease_release.lua"))
        self._commit = client.register_script(load_lua("workers", "lease_commit.lua"))

    async def acquire(self, job_id: str) -> Lease | Literal["held", "done"]:
        """A new lease (fresh token), or "held" (another live owner) or "done" (finished)."""
        kind, token, deliveries, now_ms, expires = await self._acquire(
            keys=_keys(job_id), args=[self._owner, self._lease_ms, self._state_ttl, job_id]
        )
        if kind == 0:
            return "held"
        if kind == 2:
            return "done"
        text = expires.decode() if isinstance(expires, bytes) else str(expires)
        lease = Lease(
            job_id=job_id,
            token=int(token),
            holder=f"{self._owner}:{int(token)}",
            deliveries=int(deliveries),
            now=int(now_ms) / 1000,
            expires_at=float(text) if text else None,
        )
        self._held[job_id] = lease
        return lease

    async def fence(self, lease: Lease) -> None:
        """Prove (and extend) the lease in one step; LeaseLostError if it is not current."""
        code = await self._fence(
            keys=_keys(lease.job_id), args=[lease.holder, self._lease_ms, lease.job_id]
        )
        if int(code) != 1:
            lease.lost = True
            raise LeaseLostError(
                f"job {lease.job_id}: lease token {lease.token} is no longer current"
                if int(code) == 0
                else f"job {lease.job_id} was finished by another delivery"
            )

    async def commit(
        self,
        lease: Lease,
        status: str,
        *,
        result_key: str = "",
        result_json: str = "",
        result_ttl: int = 0,
        dry_run: bool = False,
        event: tuple[str, str] | None = None,
        release: bool = False,
    ) -> int:
        """Write ``status`` (and the result, when ``result_key`` is given) under the fencing rules.

        Returns 1 (written as holder), 2 (a success written after the lease was lost, while
        the job had none) or 0 (refused: a success is stored, or a newer owner decides).
        """
        keys = [*_keys(lease.job_id), result_key or state_key(lease.job_id)]
        flag = "1" if dry_run else "0"
        channel, message = event or ("", "")
        args: list[str | int] = [
            lease.holder, status, result_json, result_ttl, lease.job_id, self._state_ttl, flag,
            channel, message, "1" if release and not dry_run else "0",
        ]  # fmt: skip
        code = int(await self._commit(keys=keys, args=args))
        if release and not dry_run:
            self._forget(lease)
        return code

    def _forget(self, lease: Lease) -> None:
        lease.released = True
        if self._held.get(lease.job_id) is lease:
            del self._held[lease.job_id]

    async def release(self, lease: Lease, *, uncount: bool = False) -> None:
        """Give the lease back; ``uncount``: this delivery does not count against the job."""
        if lease.released:
            return
        if self._held.get(lease.job_id) is lease:
            del self._held[lease.job_id]
        with contextlib.suppress(RedisError, OSError):
            await self._release(
                keys=_keys(lease.job_id)[:2], args=[lease.holder, "1" if uncount else "0"]
            )

    async def refresh_all(self) -> None:
        for lease in list(self._held.values()):
            code = await self._fence(
                keys=_keys(lease.job_id), args=[lease.holder, self._lease_ms, lease.job_id]
            )
            if int(code) == 0:
                lease.lost = True

    @property
    def held(self) -> list[str]:
        return list(self._held)


class Heartbeat:
    """Background task on the worker loop: extend job leases and re-stamp broker messages."""

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
            t = await self._broker.time()
            now = int(t[0]) + int(t[1]) / 1e6  # Redis's clock: the same for every worker
            await self._broker.zadd(self._index, dict.fromkeys(tags, now), xx=True)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                await self.beat()
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
