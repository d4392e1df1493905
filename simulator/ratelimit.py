"""RPM and TPM buckets per model, refilled continuously, as OpenAI applies them.

A bucket holds at most ``limit`` and refills at ``limit / 60`` per second, so a full bucket allows a
burst of ``limit`` and then ``limit`` per minute. A request is admitted only if both buckets hold
enough (1 request; prompt tokens + max output tokens); otherwise nothing is taken and the caller
gets a 429 with the time until it would fit. Tokens are never refunded after the answer: like
OpenAI, the reservation at admission is what counts.

>>> limits = RateLimits(tpm=600, rpm=2)
>>> limits.admit("gpt-4o", 500, now=0.0).headers["x-ratelimit-remaining-tokens"]
'100'
>>> limits.admit("gpt-4o", 500, now=0.0).error.code
'rate_limit_exceeded'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simulator import errors
from simulator.durations import format_duration


class Bucket:
    """A continuously refilled bucket of capacity ``limit`` per 60 s, starting full."""

    __slots__ = ("_at", "_level", "limit", "rate")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.rate = limit / 60.0
        self._level = float(limit)
        self._at = now

    def level(self, now: float) -> float:
        if now > self._at:
            self._level = min(float(self.limit), self._level + (now - self._at) * self.rate)
            self._at = now
        return self._level

    def take(self, amount: float) -> None:
        self._level -= amount

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until the bucket holds ``amount``."""
        return max(0.0, (amount - self.level(now)) / self.rate)

    def time_to_full(self, now: float) -> float:
        return (self.limit - self.level(now)) / self.rate

    def remaining(self, now: float) -> int:
        return max(0, math.floor(self.level(now) + 1e-9))


@dataclass
class Admission:
    """Outcome of :meth:`RateLimits.admit`: ``error`` is None when admitted; headers always set."""

    headers: dict[str, str]
    error: errors.ApiError | None = None


@dataclass
class _ModelBuckets:
    requests: Bucket
    tokens: Bucket


@dataclass
class RateLimits:
    """Per-model RPM/TPM buckets with the same limits for every model (OpenAI limits per model)."""

    tpm: int
    rpm: int
    _models: dict[str, _ModelBuckets] = field(default_factory=dict)

    def _buckets(self, model: str, now: float) -> _ModelBuckets:
        buckets = self._models.get(model)
        if buckets is None:
            buckets = _ModelBuckets(Bucket(self.rpm, now), Bucket(self.tpm, now))
            self._models[model] = buckets
        return buckets

    def reset(self) -> None:
        """Refill every bucket (forget all models)."""
        self._models.clear()

    def headers(self, model: str, now: float) -> dict[str, str]:
        b = self._buckets(model, now)
        return {
            "x-ratelimit-limit-requests": str(self.rpm),
            "x-ratelimit-limit-tokens": str(self.tpm),
            "x-ratelimit-remaining-requests": str(b.requests.remaining(now)),
            "x-ratelimit-remaining-tokens": str(b.tokens.remaining(now)),
            "x-ratelimit-reset-requests": format_duration(b.requests.time_to_full(now)),
            "x-ratelimit-reset-tokens": format_duration(b.tokens.time_to_full(now)),
        }

    def admit(self, model: str, tokens: int, now: float) -> Admission:
        """Take 1 request and ``tokens`` tokens for ``model`` if both fit now."""
        b = self._buckets(model, now)
        if tokens > self.tpm:
            too_large = errors.request_too_large(model, self.tpm, tokens)
            return Admission(self.headers(model, now), too_large)
        for kind, bucket, amount in (("requests", b.requests, 1), ("tokens", b.tokens, tokens)):
            wait = bucket.wait_for(amount, now)
            if wait > 0:
                err = errors.rate_limited(
                    model,
                    kind,
                    bucket.limit,
                    bucket.limit - bucket.remaining(now),
                    amount,
                    format_duration(wait),
                )
                err.headers["retry-after"] = str(max(1, math.ceil(wait)))
                err.headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
                return Admission(self.headers(model, now), err)
        b.requests.take(1)
        b.tokens.take(tokens)
        return Admission(self.headers(model, now))
