"""Several OS processes on one limit: the fleet queue gives each its fair turn, two tenants share
by weight, a killed process's waiters do not block the queue, a cooldown pauses everyone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
import redis

from shared.limiter import LimitsConfig, ModelLimits, RedisLimiter
from tests.conftest import ROOT
from tests.limiter.helpers import make
from tests.limiter.proc_limiter import KEY

TPM = 12_000  # 200 tokens/s: 20 grants/s of 10 tokens, fleet-wide


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.limiter.proc_limiter", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


async def _drain(url: str) -> RedisLimiter:
    """Spend the full bucket first: the test measures the paced part, where the queue decides."""
    cfg = LimitsConfig(
        configured={KEY.model: ModelLimits(TPM, 100_000)}, margin_s=0, interactive_reserve=0
    )
    lim = make(url, cfg)
    await lim.acquire(KEY, TPM)
    return lim


def _shares(url: str, tenants: list[str], seconds: float) -> list[int]:
    procs = [
        _spawn("grants", url, "--seconds", str(seconds), "--tpm", str(TPM), "--size", "10",
               "--tenant", t, "--coroutines", "32")
        for t in tenants
    ]  # fmt: skip
    # start together once every interpreter is up (slow on a busy machine)
    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    while int(r.get("test:ready") or 0) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    start_at = time.time() + 0.5
    r.set("test:go", start_at)
    per_proc = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        assert p.returncode == 0
        per_proc.append(json.loads(out))
    # count the grants made while every process was waiting (not the start, not the end)
    lo, hi = (start_at + 2.0) * 1000, (start_at + seconds - 1.0) * 1000
    return [sum(1 for t, _ in gs if lo <= t <= hi) for gs in per_proc]


@pytest.mark.slow
async def test_four_processes_each_get_a_quarter(redis_url: str) -> None:
    await _drain(redis_url)
    counts = _shares(redis_url, ["", "", "", ""], seconds=14.0)
    total = sum(counts)
    print("grants per process:", counts)
    # ~20 grants/s for 11 s; the queue hands them out in arrival order, so each process's share
    # is set by its waiters, not by who asks first when capacity frees. Each keeps 32 waiters in
    # line (~6 s of grants): a process stalled by load for less than that loses no turn.
    assert total >= 180, counts
    assert all(abs(c / total - 0.25) <= 0.05 for c in counts), counts


@pytest.mark.slow
async def test_two_tenants_share_three_to_one(redis_url: str) -> None:
    await _drain(redis_url)
    a, b = _shares(redis_url, ["a", "b"], seconds=14.0)
    print("grants per tenant:", a, b)
    assert a + b >= 180, (a, b)
    assert 3 * 0.9 <= a / b <= 3 * 1.1, (a, b)


@pytest.mark.slow
async def test_a_killed_process_does_not_block_the_queue(redis_url: str) -> None:
    lim = await _drain(redis_url)
    p = _spawn("hold", redis_url, "--waiters", "5", "--size", "12000")  # 60 s each at 200/s
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "queued"
    assert (await lim.snapshot(KEY)).waiting_bulk == 5
    p.kill()  # kill -9: its waiters stay in the fleet queue, ahead of ours
    p.wait()
    # Ours is a new flow: it takes its turn before the dead process's second waiter anyway; the
    # dead ones must also never be granted (that capacity would be lost): once their process was
    # not seen for waiter_alive_s (5 s), they are dropped as they reach the head.
    await asyncio.sleep(5.5)
    t0 = time.monotonic()
    await lim.acquire(KEY, 200, priority="bulk", timeout=30)
    waited = time.monotonic() - t0
    snap = await lim.snapshot(KEY)
    assert waited < 3.0, waited
    assert snap.waiting == 0 and snap.in_flight == 2  # the drain and ours: no dead one granted


@pytest.mark.slow
async def test_cooldown_is_shared_across_processes(redis_url: str) -> None:
    lim: RedisLimiter = make(redis_url, LimitsConfig())
    await lim.cooldown(KEY, 2.0)  # e.g. this process just got a 429 with retry-after 2 s
    p = _spawn("cooldown-wait", redis_url)
    out, _ = p.communicate(timeout=30)
    res = json.loads(out)
    assert res["cooldown_seen"] > 0.5
    # the other process waited out what remained of the pause (its start-up ate part of it)
    assert res["waited"] >= res["cooldown_seen"] - 0.1
    assert res["waited"] < res["cooldown_seen"] + 1.0
