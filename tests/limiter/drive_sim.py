"""One OS process driving AsyncOpenAI calls through the RedisLimiter (run by the tests).

    python -m tests.limiter.drive_sim --redis URL --base-url URL --seconds 65 --tpm 6000 --rpm 60

Prints one JSON line: outcomes and tokens. The call path is the one the worker uses: acquire
(prompt estimate + max output) -> call -> observe headers -> settle with usage; on 429 release
uncounted and set the fleet cooldown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter

import openai
import redis.asyncio as aioredis

from shared.errors import CapacityWaitTimeoutError
from shared.limiter import (
    LimitKey,
    LimitsConfig,
    ModelLimits,
    RedisLimiter,
    key_fingerprint,
    retry_after_seconds,
)
from shared.text_tokens import prompt_tokens

MODEL = "gpt-4.1-mini"
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "zebras",
    "watch",
    "quietly",
]


async def run(args: argparse.Namespace) -> dict[str, object]:
    cfg = LimitsConfig(configured={MODEL: ModelLimits(args.tpm, args.rpm)} if args.tpm else {})
    r = aioredis.Redis.from_url(args.redis)
    limiter = RedisLimiter(r, cfg)
    client = openai.AsyncOpenAI(
        api_key="sk-test", base_url=args.base_url, max_retries=0, timeout=30
    )
    key = LimitKey(MODEL, key_fingerprint("sk-test", args.base_url))
    rng = random.Random(args.seed)
    out: Counter[str] = Counter()
    deadline = time.monotonic() + args.seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 300)))
            max_out = rng.randint(50, 250)
            estimate = prompt_tokens([text]) + max_out
            try:
                res = await limiter.acquire(
                    key,
                    estimate,
                    max_output_tokens=max_out,
                    timeout=max(0.1, deadline - time.monotonic()),
                )
            except CapacityWaitTimeoutError:
                return
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=MODEL,
                    max_tokens=max_out,
                    messages=[{"role": "user", "content": text}],
                )
            except openai.RateLimitError as exc:
                out["429"] += 1
                await limiter.release(res, counted=False)
                await limiter.cooldown(key, retry_after_seconds(exc.response.headers) or 1.0)
                continue
            except openai.APIError:
                out["error"] += 1
                await limiter.release(res, counted=True)
                continue
            await limiter.observe_headers(key, raw.headers)
            usage = raw.parse().usage
            assert usage is not None
            await limiter.settle(
                res, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
            )
            out["ok"] += 1
            out["tokens"] += usage.prompt_tokens + max_out

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    out["resyncs"] = (await limiter.snapshot(key)).resyncs
    await client.close()
    await r.aclose()
    return dict(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--redis", required=True)
    p.add_argument("--base-url", required=True)
    p.add_argument("--seconds", type=float, default=65)
    p.add_argument("--tpm", type=int, default=0, help="0: discover from headers")
    p.add_argument("--rpm", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    print(json.dumps(asyncio.run(run(p.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
