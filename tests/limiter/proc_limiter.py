"""One OS process using a RedisLimiter (run by the multi-process tests).

    python -m tests.limiter.proc_limiter grants URL --seconds 14 --tpm 12000 --size 10
    python -m tests.limiter.proc_limiter hold URL --waiters 5 --size 5000
    python -m tests.limiter.proc_limiter cooldown-wait URL

``grants`` prints a JSON list of [granted_at_ms, tokens] (coroutines acquire bulk capacity in a
loop, settle each grant; it starts at the time the test writes to ``test:go``); ``hold`` queues waiters, prints "queued" and waits (to be killed);
``cooldown-wait`` prints how long one acquire waited (seconds) and the cooldown it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import redis.asyncio as aioredis

from shared.errors import CapacityWaitTimeoutError
from shared.limiter import LimitKey, LimitsConfig, ModelLimits, RedisLimiter

KEY = LimitKey("gpt-4.1-mini", "0123456789abcdef")


def _config(args: argparse.Namespace) -> LimitsConfig:
    return LimitsConfig(
        configured={KEY.model: ModelLimits(args.tpm, args.rpm)},
        margin_s=0.0,
        tenant_weights={"a": 3.0, "b": 1.0},
    )


async def grants(args: argparse.Namespace) -> object:
    client = aioredis.Redis.from_url(args.url)
    lim = RedisLimiter(client, _config(args))
    got: list[list[int]] = []
    # all processes start together: ready, then wait for the test's "go" (a start time)
    await client.incr("test:ready")
    while (go := await client.get("test:go")) is None:  # noqa: ASYNC110 (another process)
        await asyncio.sleep(0.02)
    await asyncio.sleep(max(0.0, float(go) - time.time()))
    deadline = time.monotonic() + args.seconds

    async def loop() -> None:
        while time.monotonic() < deadline:
            try:
                r = await lim.acquire(
                    KEY, args.size, priority="bulk", tenant=args.tenant or None,
                    timeout=max(0.01, deadline - time.monotonic()),
                )  # fmt: skip
            except CapacityWaitTimeoutError:
                return
            await lim.settle(r, prompt_tokens=args.size, completion_tokens=0)
            got.append([r.granted_at_ms, args.size])

    await asyncio.gather(*(loop() for _ in range(args.coroutines)))
    return got


async def hold(args: argparse.Namespace) -> object:
    lim = RedisLimiter(aioredis.Redis.from_url(args.url), _config(args))
    tasks = [
        asyncio.create_task(lim.acquire(KEY, args.size, priority="bulk"))
        for _ in range(args.waiters)
    ]
    await asyncio.sleep(0.5)
    print("queued", flush=True)
    await asyncio.gather(*tasks)
    return "granted"


async def cooldown_wait(args: argparse.Namespace) -> object:
    lim = RedisLimiter(aioredis.Redis.from_url(args.url), LimitsConfig())
    seen = (await lim.snapshot(KEY)).cooldown_s
    t0 = time.monotonic()
    await lim.acquire(KEY, 10, timeout=10)
    return {"waited": time.monotonic() - t0, "cooldown_seen": seen}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["grants", "hold", "cooldown-wait"])
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--tpm", type=int, default=12_000)
    p.add_argument("--rpm", type=int, default=100_000)
    p.add_argument("--size", type=int, default=10)
    p.add_argument("--coroutines", type=int, default=8)
    p.add_argument("--waiters", type=int, default=5)
    p.add_argument("--tenant", default="")
    args = p.parse_args()
    fn = {"grants": grants, "hold": hold, "cooldown-wait": cooldown_wait}[args.mode]
    print(json.dumps(asyncio.run(fn(args))), flush=True)


if __name__ == "__main__":
    main()
