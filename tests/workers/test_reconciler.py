"""The reconciler's election and verdicts against a real Redis (no broker needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import redis.asyncio as aioredis

from shared.jobs import ImageSpec, Job
from shared.jobstate import OPEN_JOBS, record_submitted, state_key
from shared.limiter import AdaptiveConcurrency, LimitsConfig, RedisLimiter
from shared.metrics import Metrics
from shared.settings import Settings
from shared.storage import build_stores
from workers.deps import WorkerDeps
from workers.locks import JobLocks, Lease
from workers.reconciler import LEADER_KEY, Reconciler


class Published:
    """Stands in for the Celery app's ``send_task``: records what would be published."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_task(self, name: str, *, args: list[Any], queue: str) -> None:
        self.sent.append(args[0]["job_id"])


@pytest.fixture
async def deps(redis_url: str) -> AsyncIterator[WorkerDeps]:
    s = Settings(redis_url=redis_url, reconcile_interval_seconds=0.2, reconcile_stale_seconds=0.5)
    r = aioredis.from_url(redis_url)
    images, results, events = build_stores(s, r)
    client = openai.AsyncOpenAI(api_key="sk-unused", base_url="http://127.0.0.1:9/v1")
    yield WorkerDeps(
        settings=s, client=client, redis=r, images=images, results=results, events=events,
        limiter=RedisLimiter(r, LimitsConfig.from_settings(s)),
        concurrency=AdaptiveConcurrency(initial=4, minimum=4, maximum=4), metrics=Metrics(),
        locks=JobLocks(r), account="test",
    )  # fmt: skip
    await client.close()
    await r.aclose()


def job(job_id: str, expires_at: float) -> Job:
    return Job(job_id=job_id, images=[ImageSpec(ref="https://example.com/a.png")], prompt="p",
               expires_at=expires_at)  # fmt: skip


async def test_one_leader_per_fleet_and_a_successor(deps: WorkerDeps) -> None:
    a, b = Reconciler(deps, Published()), Reconciler(deps, Published())
    assert await a.is_leader() and not await b.is_leader()
    assert await a.is_leader()  # the leader renews
    await deps.redis.delete(LEADER_KEY)  # its process died: the key lapses
    assert await b.is_leader() and not await a.is_leader()


async def test_verdicts(deps: WorkerDeps) -> None:
    r = deps.redis
    for j, expires in (("lost", 9e9), ("late", 1.0), ("held", 9e9), ("done", 9e9)):
        await record_submitted(r, job(j, expires), expires_at=expires, ttl_seconds=60)
    held = await JobLocks(r).acquire("held")
    assert isinstance(held, Lease)
    await r.hset(state_key("done"), "status", "succeeded")
    await r.zadd(OPEN_JOBS, {j: 0 for j in ("lost", "late", "held", "done")})  # long silent
    app = Published()
    rec = Reconciler(deps, app)
    verdicts = await rec.reconcile_once()
    assert verdicts == {"requeue": 1, "expired": 1, "alive": 1, "done": 1}
    assert app.sent == ["lost"]
    late = await deps.results.get("late")
    assert late is not None and late.error is not None and late.error.code == "expired"
    assert await r.zscore("imgq:dlq", "late") is not None
    assert await rec.reconcile_once() == {}  # re-enqueued once per stale period, not per tick
    await asyncio.sleep(0.6)
    assert (await rec.reconcile_once())["requeue"] == 1
