"""The dead-letter set: jobs that failed as poison (or expired), kept for a person to look at.

``imgq:dlq`` is a sorted set: member = job id, score = when it was dead-lettered (unix s, Redis
TIME). Why it died is on the job's result (``error.code``: ``poison_job``, ``expired``); the job
spec stays in its state hash (shared/jobstate.py) so ``imgq dlq retry`` can enqueue it again.

>>> DLQ_KEY
'imgq:dlq'
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

DLQ_KEY = "imgq:dlq"
# Bounded like every imgq key: past this many entries the oldest go first (their job state and
# result expire on their own TTLs anyway, so a very old entry could not be retried).
MAX_ENTRIES = 100_000


async def add(r: aioredis.Redis, job_id: str, *, max_entries: int = MAX_ENTRIES) -> None:
    now = await r.time()
    async with r.pipeline(transaction=True) as pipe:
        pipe.zadd(DLQ_KEY, {job_id: int(now[0]) + int(now[1]) / 1e6})
        pipe.zremrangebyrank(DLQ_KEY, 0, -(max_entries + 1))
        await pipe.execute()


async def entries(r: aioredis.Redis, *, limit: int = 100) -> list[tuple[str, float]]:
    """The oldest ``limit`` entries as (job id, dead-lettered at)."""
    raw: Any = await r.zrange(DLQ_KEY, 0, limit - 1, withscores=True)
    return [(m.decode() if isinstance(m, bytes) else str(m), float(s)) for m, s in raw]


async def count(r: aioredis.Redis) -> int:
    return int(await r.zcard(DLQ_KEY))


async def contains(r: aioredis.Redis, job_id: str) -> bool:
    return await r.zscore(DLQ_KEY, job_id) is not None


async def remove(r: aioredis.Redis, job_id: str) -> bool:
    return bool(await r.zrem(DLQ_KEY, job_id))


async def purge(r: aioredis.Redis) -> int:
    """Forget every entry (their results stay, with their error); returns how many."""
    n = await count(r)
    await r.delete(DLQ_KEY)
    return n
