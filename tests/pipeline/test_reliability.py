"""Nothing is lost or duplicated when a worker dies, holds a job long, or waits for capacity."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from producer.client import Client, SubmitRequest
from shared.settings import Settings
from tests.conftest import Sim
from tests.pipeline.conftest import WorkerFactory, make_image, sent_hash

pytestmark = pytest.mark.slow
PROMPT = "Describe this image."


def wait_in_flight(sim: Sim, n: int, timeout: float = 20) -> None:
    """Until the simulator holds ``n`` calls: the attempts are made and on record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sim.stats()["in_flight"] >= n:
            return
        time.sleep(0.1)
    raise TimeoutError("jobs did not start")


def test_jobs_of_a_killed_worker_come_back_and_finish_once(
    redis_url: str, simulator_factory: Callable[..., Sim], worker_factory: WorkerFactory
) -> None:
    sim = simulator_factory("--latency-ms", "3000", "--jitter-ms", "0", "--tpm", "10000000",
                            "--rpm", "100000")  # fmt: skip
    limits = json.dumps({"gpt-4.1-mini": {"tpm": 10_000_000, "rpm": 100_000}})
    doomed = worker_factory(sim, concurrency=4, IMGQ_MODEL_LIMITS=limits)
    images = [make_image(100 + i) for i in range(4)]
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(SubmitRequest(images=[img], prompt=PROMPT) for img in images)
        wait_in_flight(sim, len(ids))
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        killed_at = time.monotonic()
        worker_factory(sim, concurrency=4, IMGQ_MODEL_LIMITS=limits)
        results = list(c.as_completed(ids, timeout=90))
        recovered_in = time.monotonic() - killed_at
    assert sorted(r.job_id for r in results) == sorted(ids)
    assert all(r.status == "succeeded" for r in results), [r.error for r in results]
    assert all(r.attempts == 2 for r in results)  # the lost attempt is on record
    assert {r.output_text.split()[1] for r in results if r.output_text} == {
        f"sha256={sent_hash(i)}" for i in images
    }
    # Lease (20 s) + restore scan + one 3 s call: seconds, not kombu's default ~100 s.
    print(f"killed worker's jobs finished {recovered_in:.1f} s after the kill")
    assert recovered_in < 60


def test_a_job_held_longer_than_the_lease_is_not_run_twice(
    redis_url: str, simulator_factory: Callable[..., Sim], worker_factory: WorkerFactory
) -> None:
    sim = simulator_factory("--latency-ms", "27000", "--jitter-ms", "0")
    worker_factory(sim, concurrency=2)
    worker_factory(sim, concurrency=2)
    img = make_image(200)
    with Client(Settings(redis_url=redis_url)) as c:
        r = c.wait(c.submit([img], PROMPT), timeout=90)
    assert r.status == "succeeded" and r.attempts == 1
    assert sim.stats()["image_hashes"] == {sent_hash(img): 1}


def test_backlog_waits_for_capacity_without_429s_or_duplicates(
    redis_url: str, simulator_factory: Callable[..., Sim], worker_factory: WorkerFactory
) -> None:
    sim = simulator_factory("--latency-ms", "5", "--jitter-ms", "0", "--tpm", "2400",
                            "--rpm", "1000")  # fmt: skip
    limits = json.dumps({"gpt-4o": {"tpm": 2400, "rpm": 1000}})
    worker_factory(sim, concurrency=8, IMGQ_MODEL_LIMITS=limits, IMGQ_CAPACITY_WAIT_SECONDS="2")
    images = [make_image(300 + i) for i in range(14)]
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(
            SubmitRequest(
                images=[img],
                prompt=PROMPT,
                model="gpt-4o",
                detail="low",
                max_output_tokens=150,
                priority="bulk",
            )
            for img in images
        )
        results = list(c.as_completed(ids, timeout=100))
    assert all(r.status == "succeeded" for r in results), [
        (r.status, r.error) for r in results if r.status != "succeeded"
    ]
    assert all(r.attempts == 1 for r in results)  # waiting for capacity is not an attempt
    stats = sim.stats()
    assert stats["codes"].get("rate_limit_exceeded", 0) == 0
    assert set(stats["image_hashes"].values()) == {1}


def test_a_stopping_worker_hands_back_jobs_waiting_for_capacity(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    tight = json.dumps({"gpt-4o": {"tpm": 700, "rpm": 1000}})  # two of these jobs per minute
    first = worker_factory(simulator, IMGQ_MODEL_LIMITS=tight, IMGQ_CAPACITY_WAIT_SECONDS="60")
    opts = {"model": "gpt-4o", "detail": "low", "max_output_tokens": 250}
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(
            SubmitRequest(images=[make_image(600 + i)], prompt=PROMPT, **opts) for i in range(6)
        )
        deadline = time.monotonic() + 20
        while sum((r := c.get(i)) is not None and r.done for i in ids) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        stopping = time.monotonic()
        first.send_signal(signal.SIGTERM)  # warm shutdown while four jobs wait for capacity
        first.wait(timeout=30)
        stopped_in = time.monotonic() - stopping
        roomy = json.dumps({"gpt-4o": {"tpm": 1_000_000, "rpm": 1000}})
        worker_factory(simulator, IMGQ_MODEL_LIMITS=roomy)
        results = list(c.as_completed(ids, timeout=60))
    print(f"worker with 4 jobs waiting for capacity stopped in {stopped_in:.1f} s")
    assert stopped_in < 15  # not the 60 s capacity wait
    assert all(r.status == "succeeded" for r in results), [r.error for r in results]
    assert all(r.attempts == 1 for r in results)
    assert set(simulator.stats()["image_hashes"].values()) == {1}
