"""Chaos with real processes: kill -9, SIGSTOP, poison jobs. Each test prints its figures.

Run: ``pytest -s -m slow tests/pipeline/test_chaos.py`` (figures in RELIABILITY.md).
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from producer.client import Client, SubmitRequest
from shared.dlq import DLQ_KEY
from shared.jobstate import read_state, state_key
from shared.settings import Settings
from tests.conftest import Sim
from tests.pipeline.conftest import WorkerFactory, make_image, sent_hash

pytestmark = pytest.mark.slow
PROMPT = "Describe this image."
MODEL = "gpt-4.1-mini"


def limits(rpm: int) -> str:
    return json.dumps({MODEL: {"tpm": 10_000_000, "rpm": rpm}})


def paid_twice(sim: Sim, hashes: set[str] | None = None) -> int:
    """Paid calls (admitted by the API) beyond the first per image; test images are distinct."""
    counts = sim.stats()["admitted_hashes"]
    return sum(n - 1 for h, n in counts.items() if hashes is None or h in hashes)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def test_kill9_of_a_worker_holding_60_jobs(
    redis_url: str, simulator_factory: Callable[..., Sim], worker_factory: WorkerFactory
) -> None:
    """20 calls in flight and 40 jobs waiting for limiter capacity when the worker dies."""
    sim = simulator_factory("--latency-ms", "5000", "--jitter-ms", "0", "--tpm", "10000000",
                            "--rpm", "100000")  # fmt: skip
    doomed = worker_factory(sim, concurrency=64, IMGQ_MODEL_LIMITS=limits(20))
    images = [make_image(1000 + i) for i in range(60)]
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(SubmitRequest(images=[img], prompt=PROMPT) for img in images)
        wait_until(lambda: sim.stats()["in_flight"] >= 20, 30, "calls did not start")
        time.sleep(0.5)
        r = redis.Redis.from_url(redis_url)
        held = sum(1 for i in ids if r.exists(f"imgq:lock:{i}"))
        before = sim.stats()
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        killed_at = time.monotonic()
        after = sim.stats()
        in_flight_at_kill = max(before["in_flight"], after["in_flight"])
        started = set(after["admitted_hashes"])
        worker_factory(sim, concurrency=64, IMGQ_MODEL_LIMITS=limits(100_000))
        results = list(c.as_completed(ids, timeout=120))
        recovered_in = time.monotonic() - killed_at
    assert sorted(x.job_id for x in results) == sorted(ids)  # 0 lost
    assert all(x.status == "succeeded" for x in results), [x.error for x in results]
    answers = {x.output_text.split()[1] for x in results if x.output_text}
    assert answers == {f"sha256={sent_hash(i)}" for i in images}  # each job its own answer
    dup = paid_twice(sim)
    not_started = {sent_hash(i) for i in images} - started
    print(
        f"\nkill -9: worker held {held} jobs ({in_flight_at_kill} calls in flight, "
        f"{len(not_started)} not yet called); 0 of {len(ids)} lost, duplicate paid calls {dup} "
        f"(<= {in_flight_at_kill} in flight), {paid_twice(sim, not_started)} among jobs not yet "
        f"called; all finished {recovered_in:.1f} s after the kill"
    )
    assert held >= 50
    assert dup <= in_flight_at_kill
    assert paid_twice(sim, not_started) == 0


def test_a_paused_worker_is_fenced_out(
    redis_url: str,
    simulator_factory: Callable[..., Sim],
    worker_factory: WorkerFactory,
    tmp_path: Path,
) -> None:
    """SIGSTOP 40 s with 4 calls in flight and 8 jobs waiting for a call slot; another worker
    takes them all over; SIGCONT: the paused worker's waiting jobs reach the fencing check."""
    sim = simulator_factory("--latency-ms", "3000", "--jitter-ms", "0")
    roomy = limits(100_000)
    paused = worker_factory(sim, concurrency=16, IMGQ_MODEL_LIMITS=roomy, IMGQ_MAX_IN_FLIGHT="4")
    images = [make_image(2000 + i) for i in range(12)]
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(SubmitRequest(images=[img], prompt=PROMPT) for img in images)
        wait_until(lambda: sim.stats()["in_flight"] >= 4, 30, "calls did not start")
        time.sleep(0.5)
        paused.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        in_flight = sim.stats()["in_flight"]
        called_before = set(sim.stats()["admitted_hashes"])
        worker_factory(sim, concurrency=16, IMGQ_MODEL_LIMITS=roomy)
        results = list(c.as_completed(ids, timeout=90))
        taken_over_in = time.monotonic() - stopped_at
        time.sleep(max(0.0, 40 - (time.monotonic() - stopped_at)))
        paused.send_signal(signal.SIGCONT)
        time.sleep(15)  # the paused worker wakes up: fenced out before any new call
        alive = paused.poll() is None
        final = [c.get(i) for i in ids]
    log = (tmp_path / "worker0.log").read_text(errors="replace")
    fenced = len(set(re.findall(r"job (\w+): lease lost before the call", log)))
    repaid = len(set(re.findall(r"job (\w+): a success was already stored", log)))
    not_started = {sent_hash(i) for i in images} - called_before
    dup = paid_twice(sim, not_started)
    print(
        f"\nSIGSTOP 40 s: {in_flight} calls in flight, {len(not_started)} jobs waiting for a "
        f"slot; the other worker finished all {len(ids)} {taken_over_in:.1f} s after the stop; "
        f"after SIGCONT {fenced} jobs stopped by the fencing check before calling, {repaid} "
        f"answers that arrived after the takeover not stored (first success kept); duplicate paid calls "
        f"{dup} among jobs not yet called, {paid_twice(sim)} in all (<= {in_flight} in flight); "
        f"paused worker alive: {alive}"
    )
    assert all(x.status == "succeeded" for x in results), [x.error for x in results]
    assert all(x is not None and x.status == "succeeded" for x in final)
    assert len(not_started) == 8 and dup == 0 and paid_twice(sim) <= in_flight
    assert fenced == len(not_started) and alive


def test_a_paused_worker_waiting_for_capacity_is_taken_over(
    redis_url: str, simulator_factory: Callable[..., Sim], worker_factory: WorkerFactory
) -> None:
    """SIGSTOP 40 s while 4 jobs wait for limiter capacity (RPM 2); another worker takes them."""
    sim = simulator_factory("--latency-ms", "300", "--jitter-ms", "0")
    paused = worker_factory(sim, concurrency=8, IMGQ_MODEL_LIMITS=limits(2))
    images = [make_image(2500 + i) for i in range(6)]
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(SubmitRequest(images=[img], prompt=PROMPT) for img in images)
        wait_until(lambda: sum(1 for i in ids if (x := c.get(i)) and x.done) >= 2, 30, "no start")
        waiting = [i for i in ids if not (x := c.get(i)) or not x.done]
        called_before = set(sim.stats()["admitted_hashes"])
        paused.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        worker_factory(sim, concurrency=8, IMGQ_MODEL_LIMITS=limits(100_000))
        results = list(c.as_completed(ids, timeout=90))
        taken_over_in = time.monotonic() - stopped_at
        time.sleep(max(0.0, 40 - (time.monotonic() - stopped_at)))
        paused.send_signal(signal.SIGCONT)
        time.sleep(15)
        alive = paused.poll() is None
        final = [c.get(i) for i in ids]
    not_started = {sent_hash(i) for i in images} - called_before
    dup = paid_twice(sim, not_started)
    print(
        f"\nSIGSTOP 40 s with {len(waiting)} jobs waiting for limiter capacity: taken over and "
        f"finished {taken_over_in:.1f} s after the stop; after SIGCONT duplicate paid calls "
        f"{dup} among them, {paid_twice(sim)} in all; paused worker alive: {alive}"
    )
    assert all(x.status == "succeeded" for x in results), [x.error for x in results]
    assert all(x is not None and x.status == "succeeded" for x in final)
    assert len(waiting) == 4 and dup == 0 and paid_twice(sim) == 0 and alive


def test_a_job_that_crashes_every_delivery_is_dead_lettered(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    """Its stored record cannot be parsed (e.g. written by an older, buggy producer)."""
    r = redis.Redis.from_url(redis_url)
    with Client(Settings(redis_url=redis_url)) as c:
        job_id = c.submit([make_image(3000)], PROMPT)
        r.set(f"imgq:result:{job_id}", b'{"job_id": "' + job_id.encode() + b'", "status": [')
        started = time.monotonic()
        worker_factory(simulator, concurrency=4, IMGQ_MAX_DELIVERIES="3",
                       IMGQ_REDELIVERY_BACKOFF_SECONDS="0.5")  # fmt: skip
        wait_until(lambda: r.zscore(DLQ_KEY, job_id) is not None, 60, "not dead-lettered")
        took = time.monotonic() - started
        time.sleep(5)  # no hot loop afterwards
        state = {k.decode(): v.decode() for k, v in r.hgetall(state_key(job_id)).items()}
        result = c.wait(job_id, timeout=5)
    print(
        f"\npoison job: {state['deliveries']} deliveries (IMGQ_MAX_DELIVERIES=3), dead-lettered "
        f"after {took:.1f} s, {simulator.stats()['admitted_requests']} API calls; code {result.error.code if result.error else None}"
    )
    assert state["deliveries"] == "3" and state["status"] == "failed"
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "poison_job"
    assert simulator.stats()["admitted_requests"] == 0
    _ = read_state  # the same view `imgq dlq show` prints
