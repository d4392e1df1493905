"""The two peers of the rate-limit benchmark, re-implemented from their descriptions.

* ``naive``: ``asyncio.gather`` of every call under a fixed semaphore, with the SDK's default
  retries (``max_retries=2``: it honours ``retry-after`` on 429s) and no notion of the limit.
* ``cookbook``: the approach of OpenAI's cookbook parallel processor — one in-process token
  bucket per limit (capacity = TPM and RPM, refilled continuously, starting full) from which each
  request reserves an *estimate* before it is sent (text tokens + max tokens: it has no image
  maths), failed requests go back in line (up to 5 attempts), and after any 429 every request
  pauses for 15 s. Nothing is shared between processes.

Each run returns its outcome counts; the harness reads admissions and 429s from the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from shared.text_tokens import count_tokens

MODEL = "gpt-4.1-mini"


@dataclass(frozen=True)
class Call:
    prompt: str
    data_url: str
    max_tokens: int

    def messages(self) -> list[Any]:
        return [{"role": "user", "content": [
            {"type": "text", "text": self.prompt},
            {"type": "image_url", "image_url": {"url": self.data_url, "detail": "auto"}},
        ]}]  # fmt: skip


async def run_naive(
    base_url: str, calls: Sequence[Call], *, seconds: float, concurrency: int = 32
) -> Counter[str]:
    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, timeout=60)  # retries: 2
    sem = asyncio.Semaphore(concurrency)
    out: Counter[str] = Counter()

    async def one(c: Call) -> None:
        async with sem:
            try:
                await client.chat.completions.create(
                    model=MODEL,
                    messages=c.messages(),
                    max_tokens=c.max_tokens,
                )
                out["ok"] += 1
            except openai.RateLimitError:
                out["failed_429"] += 1
            except openai.APIError:
                out["failed_other"] += 1

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(one(c) for c in calls)), timeout=seconds)
    await client.close()
    return out


class _Bucket:
    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60.0
        self.at = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now


def cookbook_estimate(c: Call) -> int:
    """Text tokens + max tokens: the cookbook counts the strings of a request, not its images."""
    return count_tokens(c.prompt) + 7 + c.max_tokens


async def run_cookbook(
    base_url: str, calls: Sequence[Call], *, seconds: float, tpm: int, rpm: int,
    pause_after_429_s: float = 15.0, max_attempts: int = 5,
) -> Counter[str]:  # fmt: skip
    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, timeout=60, max_retries=0)
    tokens, requests = _Bucket(tpm), _Bucket(rpm)
    pending: deque[tuple[Call, int]] = deque((c, 1) for c in calls)
    retry: deque[tuple[Call, int]] = deque()
    out: Counter[str] = Counter()
    last_429 = -1e9
    tasks: set[asyncio.Task[None]] = set()
    deadline = time.monotonic() + seconds

    async def one(c: Call, attempt: int) -> None:
        nonlocal last_429
        try:
            await client.chat.completions.create(
                model=MODEL,
                messages=c.messages(),
                max_tokens=c.max_tokens,
            )
            out["ok"] += 1
        except openai.RateLimitError:
            last_429 = time.monotonic()
            (retry.append((c, attempt + 1)) if attempt < max_attempts else out.update(["failed"]))
        except openai.APIError:
            (retry.append((c, attempt + 1)) if attempt < max_attempts else out.update(["failed"]))

    nxt: tuple[Call, int] | None = None
    while time.monotonic() < deadline and (nxt or retry or pending or tasks):
        if nxt is None and (retry or pending):
            nxt = retry.popleft() if retry else pending.popleft()
        now = time.monotonic()
        tokens.refill(now)
        requests.refill(now)
        if nxt is not None:
            need = cookbook_estimate(nxt[0])
            if requests.level >= 1 and tokens.level >= need:
                requests.level -= 1
                tokens.level -= need
                t = asyncio.create_task(one(*nxt))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                nxt = None
        await asyncio.sleep(0.001)
        paused = time.monotonic() - last_429
        if paused < pause_after_429_s:  # everything waits out the cool-down
            await asyncio.sleep(
                min(pause_after_429_s - paused, max(0.0, deadline - time.monotonic()))
            )
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    return out
