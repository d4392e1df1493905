"""Shared bits of the limiter tests: building limiters on the test Redis, a hand-driven clock."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from shared.limiter import LimitsConfig, ModelLimits, RedisLimiter

MODEL = "gpt-4.1-mini"


def config(tpm: int, rpm: int, *, margin_s: float = 0.0, **kw: object) -> LimitsConfig:
    return LimitsConfig(configured={MODEL: ModelLimits(tpm, rpm)}, margin_s=margin_s, **kw)  # type: ignore[arg-type]


def make(url: str, cfg: LimitsConfig, **kw: object) -> RedisLimiter:
    return RedisLimiter(aioredis.Redis.from_url(url), cfg, **kw)  # type: ignore[arg-type]


class Clock:
    """Seconds for ``RedisLimiter(clock=...)``: frozen unless moved (``offset``) or ``live``."""

    def __init__(self, *, live: bool = False) -> None:
        self.base = time.time()
        self.offset = 0.0
        self.live = live

    def __call__(self) -> float:
        return (time.time() if self.live else self.base) + self.offset
