"""The dead-letter set stays bounded: past its cap the oldest entries go first (issue 10)."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared import dlq


async def test_the_dead_letter_set_keeps_only_the_newest_entries(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    try:
        for i in range(5):
            await dlq.add(r, f"job-{i}", max_entries=3)
        kept = [job_id for job_id, _ in await dlq.entries(r)]
        assert kept == ["job-2", "job-3", "job-4"]
        assert await dlq.count(r) == 3
    finally:
        await r.aclose()
