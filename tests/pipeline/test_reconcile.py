"""Nothing stuck: lost messages come back from the stored spec, deadlines end jobs, and
`submit_many` never frees a job it already published. Real Redis, workers and simulator."""

from __future__ import annotations

import json
import time

import pytest
import redis

from producer.client import Client, SubmitRequest
from shared.dlq import DLQ_KEY
from shared.jobstate import OPEN_JOBS, state_key
from shared.settings import Settings
from tests.conftest import Sim
from tests.pipeline.conftest import WorkerFactory, make_image
from tests.pipeline.test_chaos import paid_twice, wait_until

pytestmark = pytest.mark.slow
PROMPT = "Describe this image."
FAST_RECONCILE = {"IMGQ_RECONCILE_INTERVAL_SECONDS": "1", "IMGQ_RECONCILE_STALE_SECONDS": "3"}


def drop_queued_messages(r: redis.Redis) -> int:
    """Lose every message waiting in the broker (what a broker losing writes would do)."""
    return int(r.delete("interactive", "bulk"))


def test_a_lost_message_is_enqueued_again_from_the_stored_spec(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    r = redis.Redis.from_url(redis_url)
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(
            SubmitRequest(images=[make_image(6000 + i)], prompt=PROMPT) for i in range(3)
        )
        assert drop_queued_messages(r) == 1
        assert json.loads(r.hget(state_key(ids[0]), "spec") or b"{}")["job_id"] == ids[0]
        lost_at = time.monotonic()
        worker_factory(simulator, concurrency=4, **FAST_RECONCILE)
        results = list(c.as_completed(ids, timeout=60))
        took = time.monotonic() - lost_at
    print(f"\nreconciler: {len(ids)} jobs whose messages were lost finished {took:.1f} s later")
    assert all(x.status == "succeeded" for x in results), [x.error for x in results]
    assert paid_twice(simulator) == 0
    assert r.zcard(OPEN_JOBS) == 0  # finished jobs leave the open index


def test_jobs_past_their_deadline_fail_expired(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    r = redis.Redis.from_url(redis_url)
    with Client(Settings(redis_url=redis_url)) as c:
        delivered = c.submit([make_image(6100)], PROMPT, deadline_seconds=1)
        lost = c.submit([make_image(6101)], PROMPT, deadline_seconds=1)
        r.lrem(
            "interactive", 1, next(m for m in r.lrange("interactive", 0, -1) if lost.encode() in m)
        )
        time.sleep(1.5)  # both deadlines pass before any worker runs
        worker_factory(simulator, concurrency=4, **FAST_RECONCILE)
        at_delivery = c.wait(delivered, timeout=30)
        by_reconciler = c.wait(lost, timeout=30)
    for res in (at_delivery, by_reconciler):
        assert res.status == "failed" and res.error is not None and res.error.code == "expired"
    assert r.zscore(DLQ_KEY, lost) is not None and r.zscore(DLQ_KEY, delivered) is not None
    assert simulator.stats()["admitted_requests"] == 0


def test_submit_many_keeps_the_jobs_it_published(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker fails after the first two messages: those stay recorded, the rest are freed."""
    with Client(Settings(redis_url=redis_url)) as c:
        sent: list[str] = []
        real_send = c._async._send

        def flaky_send(jobs: list, out: list[str] | None = None) -> None:  # type: ignore[type-arg]
            real_send(jobs[:2], out)
            sent.extend(out or [])
            raise ConnectionError("broker went away")

        monkeypatch.setattr(c._async, "_send", flaky_send)
        reqs = [SubmitRequest(images=[make_image(6200 + i)], prompt=PROMPT) for i in range(4)]
        with pytest.raises(Exception, match="broker"):
            c.submit_many(reqs)
        r = redis.Redis.from_url(redis_url)
        published = r.llen("interactive")
    assert len(sent) == 2 and published == 2
    stored = [k.decode().removeprefix("imgq:result:") for k in r.keys("imgq:result:*")]
    assert sorted(stored) == sorted(sent)  # published: kept; unpublished: freed for a retry
    assert all(r.exists(state_key(j)) for j in sent)


def test_worker_refuses_a_redis_that_may_evict(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    r = redis.Redis.from_url(redis_url)
    r.config_set("maxmemory", "1gb")
    r.config_set("maxmemory-policy", "volatile-lru")
    try:
        proc = worker_factory(simulator, concurrency=2, wait_for_bindings=False)
        code = proc.wait(timeout=60)
        allowed = worker_factory(
            simulator, concurrency=2, wait_for_bindings=False, IMGQ_ALLOW_EVICTING_REDIS="true"
        )
        wait_until(lambda: bool(r.exists("_kombu.binding.interactive")), 30, "no start")
        assert allowed.poll() is None
    finally:
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", "noeviction")
    assert code != 0
