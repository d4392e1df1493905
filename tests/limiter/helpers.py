"""Shared bits of the limiter tests: building limiters on the test Redis, checking windows."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

from shared.limiter import LimitsConfig, ModelLimits, RedisLimiter

MODEL = "gpt-4.1-mini"


def config(
    tpm: int, rpm: int, *, window_s: float = 60.0, margin_s: float = 0.0, **kw: object
) -> LimitsConfig:
    return LimitsConfig(
        configured={MODEL: ModelLimits(tpm, rpm)}, window_s=window_s, margin_s=margin_s, **kw
    )  # type: ignore[arg-type]


def make(url: str, cfg: LimitsConfig, **kw: object) -> RedisLimiter:
    return RedisLimiter(aioredis.Redis.from_url(url), cfg, **kw)  # type: ignore[arg-type]


def max_in_any_window(grants: Iterable[tuple[int, int]], window_ms: int) -> tuple[int, int]:
    """(max tokens, max requests) granted within any half-open window of ``window_ms``.

    ``grants``: (granted_at_ms, tokens). A grant at t leaves the window at t + window_ms.
    """
    g = sorted(grants)
    best_t = best_r = 0
    j = 0
    tok = 0
    for i, (t, n) in enumerate(g):
        tok += n
        while g[j][0] <= t - window_ms:
            tok -= g[j][1]
            j += 1
        best_t = max(best_t, tok)
        best_r = max(best_r, i - j + 1)
    return best_t, best_r
