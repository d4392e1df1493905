"""The simulator models the API's limiter as a bucket (over HTTP, through the official SDK):
capacity = the limit, continuous refill, ``x-ratelimit-reset-tokens`` = time until full,
``remaining`` grows between requests, 429 with retry-after when a request does not fit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from shared.limiter import parse_ratelimit_headers, retry_after_seconds
from tests.conftest import Sim

MODEL = "gpt-4.1-mini"


def _call(client: openai.OpenAI, max_tokens: int) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=max_tokens, messages=[{"role": "user", "content": "hi"}]
    )


def test_simulator_bucket_refills_continuously(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--tpm", "60000", "--rpm", "600", "--latency-ms", "0",
                            "--jitter-ms", "0", "--seed", "1")  # fmt: skip
    client = openai.OpenAI(api_key="sk-test", base_url=sim.base_url, max_retries=0)
    first = parse_ratelimit_headers(_call(client, 50).headers)
    assert first.limit_tokens == 60000 and first.remaining_tokens is not None
    cost = 60000 - first.remaining_tokens
    assert 50 < cost < 100  # prompt + max_tokens, charged at admission
    # time until full: the cost at 1000 tokens/s, i.e. a few tens of milliseconds
    assert first.reset_tokens_s == pytest.approx(cost / 1000, abs=0.01)
    assert first.reset_requests_s == pytest.approx(0.1, abs=0.01)  # 1 request at 10/s
    time.sleep(0.5)
    second = parse_ratelimit_headers(_call(client, 50).headers)
    assert second.remaining_tokens == 60000 - cost  # refilled to full meanwhile, minus this one
    # spend most of the bucket: remaining then grows between requests at limit/60 per second
    t0 = time.monotonic()
    big = parse_ratelimit_headers(_call(client, 59000).headers)
    t1 = time.monotonic()
    assert big.remaining_tokens is not None and big.remaining_tokens < 1000
    assert big.reset_tokens_s is not None and 58 < big.reset_tokens_s < 60
    time.sleep(1.0)
    t2 = time.monotonic()
    after = parse_ratelimit_headers(_call(client, 10).headers)
    t3 = time.monotonic()
    assert after.remaining_tokens is not None
    small = cost - 40  # the same prompt with max_tokens 10 instead of 50
    refill = after.remaining_tokens - big.remaining_tokens + small
    # 1000 tokens/s over the time between the two admissions, which lies between the gap of the
    # two calls (t2 - t1) and their whole span (t3 - t0): bounds from our own clock, not a guess.
    assert 1000 * (t2 - t1) - 5 <= refill <= 1000 * (t3 - t0) + 5
    # a request that does not fit now: 429, nothing taken, retry-after = until it fits
    with pytest.raises(openai.RateLimitError) as err:
        _call(client, 5000)
    wait = retry_after_seconds(err.value.response.headers)
    assert wait is not None and 2.5 < wait < 5.5
    stats = sim.stats()
    assert stats["max_tokens_in_any_60s"] >= 59000 and stats["codes"]["rate_limit_exceeded"] == 1
