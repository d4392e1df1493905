"""The real pipeline at a small TPM: 3 `imgq worker` processes -> the Redis limiter -> simulator.

More work than the bucket holds is queued at once; the fleet must spend the bucket, then pace at
the refill rate (no idle gap), get (almost) no 429s, run every job exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from producer.client import Client, SubmitRequest
from shared.settings import Settings
from tests.conftest import ROOT, Sim
from tests.pipeline.conftest import make_image, wait_for_worker, worker_env

TPM, RPM = 6000, 60


@pytest.fixture
def fleet(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., None]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(sim: Sim, n: int, **extra: str) -> None:
        limits = json.dumps({"gpt-4.1-mini": {"tpm": TPM, "rpm": RPM}})
        for i in range(n):
            log = open(tmp_path / f"worker{i}.log", "wb")  # noqa: SIM115
            cmd = [sys.executable, "-m", "imgq.cli", "worker", "-c", "16", "-Q",
                   "interactive,bulk", "-n", f"fleet{i}-{os.getpid()}@%h"]  # fmt: skip
            env = worker_env(redis_url, sim, **{"IMGQ_MODEL_LIMITS": limits, **extra})
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log))
        wait_for_worker(redis_url)

    yield start
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_three_workers_stay_under_a_small_tpm(
    redis_url: str, simulator_factory: Callable[..., Sim], fleet: Callable[..., None]
) -> None:
    sim = simulator_factory("--tpm", str(TPM), "--rpm", str(RPM), "--latency-ms", "50",
                            "--jitter-ms", "30", "--seed", "2")  # fmt: skip
    fleet(sim, 3)
    sim.reset()
    n = 70  # ~120 tokens each at admission: ~50 fit in a minute, the rest in the next window
    images = [make_image(i, size=(64 + i % 7, 48 + i % 5)) for i in range(n)]
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(
            SubmitRequest(images=[img], prompt="Describe this image.", max_output_tokens=100,
                          priority="bulk" if i % 2 else "interactive", metadata={"i": i})
            for i, img in enumerate(images)
        )  # fmt: skip
        results = list(c.as_completed(ids, timeout=130))
    stats = sim.stats()
    print("fleet:", {k: stats[k] for k in ("max_tokens_in_any_60s", "admitted_tokens", "codes",
                                           "requests", "admitted_requests")})  # fmt: skip
    # the API's bucket admits up to one bucket + one minute of refill in any 60 s
    assert stats["max_tokens_in_any_60s"] <= 2 * TPM
    assert stats["codes"].get("rate_limit_exceeded", 0) <= 1
    assert sorted(r.job_id for r in results) == sorted(ids)
    assert all(r.status == "succeeded" for r in results), [r.error for r in results]
    assert stats["admitted_requests"] == n  # each job admitted once
    assert set(stats["image_hashes"].values()) == {1}  # no job ran twice
    # no idle gap: the bucket (6000) went first, the rest (~2400) at the refill rate (100/s)
    per_s = stats["admitted_tokens_per_second"]
    first = next(i for i, v in enumerate(per_s) if v)
    total = sum(per_s)
    assert sum(per_s[first : first + 5]) >= 0.5 * TPM
    assert sum(per_s[first : first + 5 + (total - TPM) // 100 + 10]) == total


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_a_backlog_minutes_deep_is_neither_redelivered_nor_duplicated(
    redis_url: str, simulator_factory: Callable[..., Sim], fleet: Callable[..., None]
) -> None:
    """600 TPM and 30 jobs of ~120 tokens: a backlog ~5 minutes deep, more than the workers'
    capacity wait (60 s) and lease (20 s). For 75 s: each admitted job ran once, no 429, nothing
    failed, the rest still waits."""
    tpm = 600
    sim = simulator_factory("--tpm", str(tpm), "--rpm", "60", "--latency-ms", "50",
                            "--jitter-ms", "30", "--seed", "4")  # fmt: skip
    limits = json.dumps({"gpt-4.1-mini": {"tpm": tpm, "rpm": 60}})
    fleet(sim, 3, IMGQ_MODEL_LIMITS=limits)
    sim.reset()
    n = 30
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(
            SubmitRequest(images=[make_image(100 + i)], prompt="Describe this image.",
                          max_output_tokens=100, priority="bulk")
            for i in range(n)
        )  # fmt: skip
        time.sleep(75)
        stats = sim.stats()
        results = [c.get(j) for j in ids]
    print("backlog:", {k: stats[k] for k in ("max_tokens_in_any_60s", "admitted_requests",
                                             "codes")})  # fmt: skip
    assert stats["max_tokens_in_any_60s"] <= 2 * tpm
    assert stats["codes"].get("rate_limit_exceeded", 0) == 0
    assert set(stats["image_hashes"].values()) == {1}  # no job sent twice
    assert 8 <= stats["admitted_requests"] <= 13  # the bucket (~5), then one per ~12 s
    statuses = [r.status if r is not None else "missing" for r in results]
    assert "failed" not in statuses and "missing" not in statuses
    done = [r for r in results if r is not None and r.status == "succeeded"]
    assert len(done) >= stats["admitted_requests"] - 1  # (the last may still be answering)
    assert all(r.attempts == 1 for r in done)
