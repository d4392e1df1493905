"""One OS process hammering a RedisLimiter (run by the multi-process tests).

    python -m tests.limiter.proc_limiter grants URL --seconds 3 --tpm 3000 --rpm 40 --window 1
    python -m tests.limiter.proc_limiter cooldown-wait URL

``grants`` prints a JSON list of [granted_at_ms, tokens]; ``cooldown-wait`` prints how long one
acquire waited (seconds) and the cooldown it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import redis.asyncio as aioredis

from shared.errors import CapacityWaitTimeoutError
from shared.limiter import LimitKey, LimitsConfig, ModelLimits, RedisLimiter

KEY = LimitKey("gpt-4.1-mini", "0123456789abcdef")


async def grants(args: argparse.Namespace) -> object:
    cfg = LimitsConfig(
        configured={KEY.model: ModelLimits(args.tpm, args.rpm)}, window_s=args.window, margin_s=0.0
    )
    lim = RedisLimiter(aioredis.Redis.from_url(args.url), cfg)
    rng = random.Random(args.seed)
    got: list[list[int]] = []
    # all processes start together: wait for the shared start time
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    deadline = time.monotonic() + args.seconds

    async def loop() -> None:
        while time.monotonic() < deadline:
            n = rng.randint(20, 300)
            try:
                r = await lim.acquire(KEY, n, timeout=max(0.01, deadline - time.monotonic()))
            except CapacityWaitTimeoutError:
                return
            if rng.random() < 0.2:  # some calls fail before admission: tokens come back
                await lim.release(r, counted=False)
            else:
                await lim.settle(r, prompt_tokens=n, completion_tokens=0)
                got.append([r.granted_at_ms, n])

    await asyncio.gather(*(loop() for _ in range(args.coroutines)))
    return got


async def cooldown_wait(args: argparse.Namespace) -> object:
    lim = RedisLimiter(aioredis.Redis.from_url(args.url), LimitsConfig())
    seen = (await lim.snapshot(KEY)).cooldown_s
    t0 = time.monotonic()
    await lim.acquire(KEY, 10, timeout=10)
    return {"waited": time.monotonic() - t0, "cooldown_seen": seen}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["grants", "cooldown-wait"])
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--tpm", type=int, default=3000)
    p.add_argument("--rpm", type=int, default=40)
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--coroutines", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-at", type=float, default=0.0)
    args = p.parse_args()
    fn = grants if args.mode == "grants" else cooldown_wait
    print(json.dumps(asyncio.run(fn(args))), flush=True)


if __name__ == "__main__":
    main()
