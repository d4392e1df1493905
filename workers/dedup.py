"""Dedup: identical jobs reuse a finished result, and identical jobs in flight share one API call.

The key hashes what decides the answer: the normalised images (as sent), their detail, the
prompt, model, API, output budget and schema. The first job to claim a key is its leader; the
others wait for the leader and copy its result (``dedup_of``), costing no call.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from shared.images import PreparedImage, image_content_hash
from shared.images.hashing import dedup_key as content_key
from shared.jobs import Job, Result, Usage
from workers.locks import delete_if_owner

DEDUP_PREFIX = "imgq:dedup:"


def dedup_key(job: Job, images: Sequence[PreparedImage]) -> str:
    params: dict[str, object] = {
        "api": job.api,
        "max_output_tokens": job.max_output_tokens,
        "json_schema": job.json_schema,
        "details": [s.detail for s in job.images],
    }
    if job.tenant is not None:  # issue 11: never share an answer (or dedup_of) across tenants
        params["tenant"] = job.tenant
    hashes = [image_content_hash(p) for p in images]
    return DEDUP_PREFIX + content_key(hashes, prompt=job.prompt, model=job.model, params=params)


async def claim(r: aioredis.Redis, key: str, job_id: str, ttl: int) -> str | None:
    """Become the leader for ``key`` (returns None) or learn the current leader's job id."""
    if await r.set(key, job_id, nx=True, ex=ttl):
        return None
    leader = await r.get(key)
    if leader is None:
        return await claim(r, key, job_id, ttl)
    leader_id = leader.decode() if isinstance(leader, bytes) else str(leader)
    return None if leader_id == job_id else leader_id


async def take_over(r: aioredis.Redis, key: str, job_id: str, ttl: int) -> None:
    await r.set(key, job_id, ex=ttl)


async def release(r: aioredis.Redis, key: str, job_id: str) -> None:
    """Give up leadership after a failure, so the next identical job calls the API itself."""
    await delete_if_owner(r, key, job_id)


def copy_result(leader: Result, into: Result) -> Result:
    """``into`` finished with ``leader``'s answer; no tokens billed for this job."""
    return into.model_copy(
        update={
            "status": "succeeded",
            "output_text": leader.output_text,
            "output_json": leader.output_json,
            "usage": Usage(
                image_tokens=leader.usage.image_tokens,
                estimated_input_tokens=leader.usage.estimated_input_tokens,
            ),
            "cost_usd": 0.0,
            "error": None,
            "dedup_of": leader.job_id,
        }
    )
