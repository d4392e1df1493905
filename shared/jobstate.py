"""The job's state in Redis: what the whole fleet agrees on about a job, changed only by scripts.

``imgq:job:<id>`` (hash, TTL = the result TTL):
  ``spec``        the Job JSON, so the reconciler and ``imgq dlq retry`` can enqueue it again
  ``expires_at``  unix seconds; a job not finished by then fails ``expired``
  ``status``      queued | running | succeeded | failed (mirrors the result record)
  ``token``       the last fencing token handed out (one INCR per lease taken)
  ``deliveries``  deliveries that took the lease (capacity hand-backs are not counted)
``imgq:jobs:open`` (sorted set): unfinished job ids scored by their last sign of life (ms,
Redis TIME): submit, lease taken, lease refreshed. The reconciler scans its oldest entries.

Results may live in S3; this state is always in Redis, so fencing decisions are atomic there.

>>> state_key("abc")
'imgq:job:abc'
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from shared.jobs import Job
from shared.lua import load_lua

STATE_PREFIX = "imgq:job:"
OPEN_JOBS = "imgq:jobs:open"
TERMINAL = (b"succeeded", b"failed")


def state_key(job_id: str) -> str:
    return STATE_PREFIX + job_id


async def record_submitted(
    r: aioredis.Redis, job: Job, *, expires_at: float, ttl_seconds: int
) -> None:
    """Store the job's spec and deadline with its record (one script: one round trip)."""
    script = r.register_script(load_lua("shared", "jobstate_submit.lua"))
    await script(
        keys=[state_key(job.job_id), OPEN_JOBS],
        args=[job.job_id, job.model_dump_json(), repr(expires_at), ttl_seconds],
    )


async def load_spec(r: aioredis.Redis, job_id: str) -> Job | None:
    """The stored job spec, or None when the job is unknown (or its state expired)."""
    raw = await r.hget(state_key(job_id), "spec")  # type: ignore[misc]
    return Job.model_validate_json(raw) if raw else None


async def read_state(r: aioredis.Redis, job_id: str) -> dict[str, str]:
    raw = await r.hgetall(state_key(job_id))  # type: ignore[misc]
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


async def reopen(r: aioredis.Redis, job: Job) -> None:
    """Mark a finished or stuck job queued again with a fresh delivery count (one transaction)."""
    seconds, _ = await r.time()
    now_ms = int(seconds) * 1000
    async with r.pipeline(transaction=True) as pipe:
        pipe.hset(
            state_key(job.job_id),
            mapping={
                "spec": job.model_dump_json(),
                "status": "queued",
                "deliveries": 0,
                "expires_at": repr(job.expires_at) if job.expires_at else "",
            },
        )
        pipe.zadd(OPEN_JOBS, {job.job_id: now_ms})
        await pipe.execute()


def send_job(app: Any, job: Job) -> None:
    """Publish ``job`` to its priority's queue (blocking: call it from a thread)."""
    from shared.broker import TASK_NAME

    app.send_task(TASK_NAME, args=[job.model_dump(mode="json")], queue=job.priority)
