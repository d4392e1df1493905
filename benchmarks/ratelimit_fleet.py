"""Fairness of the fleet queue, limiter level: OS processes waiting on one limit in Redis.

    python -m benchmarks.ratelimit_fleet grants URL --seconds 14 [--tenant a]

Each process keeps ``--coroutines`` bulk waiters in the fleet queue (acquire, settle, again) and
prints the grant times it got. ``shares()`` runs several and counts grants while all were
backlogged (after the bucket was spent: the paced part, where the queue decides).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import redis
import redis.asyncio as aioredis

from benchmarks.common import ROOT, bench_env
from shared.errors import CapacityWaitTimeoutError
from shared.limiter import LimitKey, LimitsConfig, ModelLimits, RedisLimiter

KEY = LimitKey("gpt-4.1-mini", "bench0fairness00")
TPM = 12_000  # 200 tokens/s: 20 grants/s of 10 tokens
WEIGHTS = {"a": 3.0, "b": 1.0}


def _config() -> LimitsConfig:
    return LimitsConfig(
        configured={KEY.model: ModelLimits(TPM, 1_000_000)}, margin_s=0.0, tenant_weights=WEIGHTS
    )


async def _grants(args: argparse.Namespace) -> list[int]:
    client = aioredis.Redis.from_url(args.url)
    lim = RedisLimiter(client, _config())
    got: list[int] = []
    await client.incr("bench:ready")  # then wait for the common start time
    while (go := await client.get("bench:go")) is None:  # noqa: ASYNC110 (another process)
        await asyncio.sleep(0.02)
    await asyncio.sleep(max(0.0, float(go) - time.time()))
    deadline = time.monotonic() + args.seconds

    async def loop() -> None:
        while time.monotonic() < deadline:
            try:
                r = await lim.acquire(KEY, 10, priority="bulk", tenant=args.tenant or None,
                                      timeout=max(0.01, deadline - time.monotonic()))  # fmt: skip
            except CapacityWaitTimeoutError:
                return
            await lim.settle(r, prompt_tokens=10, completion_tokens=0)
            got.append(r.granted_at_ms)

    await asyncio.gather(*(loop() for _ in range(args.coroutines)))
    return got


async def _spend_bucket(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    await RedisLimiter(client, _config()).acquire(KEY, TPM)
    await client.aclose()


def shares(url: str, tenants: list[str], seconds: float = 14.0) -> list[int]:
    """Grants per process (one process per entry of ``tenants``) while all were backlogged."""
    asyncio.run(_spend_bucket(url))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ratelimit_fleet", "grants", url, "--seconds",
             str(seconds), "--tenant", t],
            cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE, text=True,
        )
        for t in tenants
    ]  # fmt: skip
    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    while int(r.get("bench:ready") or 0) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    start_at = time.time() + 0.5
    r.set("bench:go", start_at)
    lo, hi = (start_at + 2.0) * 1000, (start_at + seconds - 1.0) * 1000
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=seconds + 60)
        out.append(sum(1 for t in json.loads(text) if lo <= t <= hi))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["grants"])
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--tenant", default="")
    p.add_argument("--coroutines", type=int, default=32)
    print(json.dumps(asyncio.run(_grants(p.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
