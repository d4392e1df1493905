"""Parse OpenAI's rate-limit headers: ``x-ratelimit-*`` and ``retry-after(-ms)``.

>>> parse_duration("6m0s"), parse_duration("1s"), parse_duration("120ms"), parse_duration("1m30.5s")
(360.0, 1.0, 0.12, 90.5)
>>> h = parse_ratelimit_headers({"X-RateLimit-Limit-Tokens": "6000",
...                              "x-ratelimit-remaining-tokens": "5400",
...                              "x-ratelimit-reset-tokens": "6s"})
>>> h.limit_tokens, h.remaining_tokens, h.reset_tokens_s, h.limit_requests
(6000, 5400, 6.0, None)
>>> retry_after_seconds({"retry-after-ms": "1250", "retry-after": "2"})
1.25
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``6m0s``, ``1.5s``, ``120ms``) or a bare number of seconds.

    Raises ``ValueError`` on anything else.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    try:
        value = float(text)
    except ValueError:
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration: {text!r}") from None
        return sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a duration: {text!r}")
    return value


@dataclass(frozen=True)
class RateLimitHeaders:
    """What one answer said about the limit; ``None`` where a header was absent or unreadable."""

    limit_tokens: int | None = None
    limit_requests: int | None = None
    remaining_tokens: int | None = None
    remaining_requests: int | None = None
    reset_tokens_s: float | None = None
    reset_requests_s: float | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in vars(self).values())


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _int(h: dict[str, str], name: str) -> int | None:
    raw = h.get(name)
    if raw is None:
        return None
    try:
        value = int(float(raw.strip()))
    except ValueError:
        return None
    return value if value >= 0 else None


def _dur(h: dict[str, str], name: str) -> float | None:
    raw = h.get(name)
    if raw is None:
        return None
    try:
        return parse_duration(raw)
    except ValueError:
        return None


def parse_ratelimit_headers(headers: Mapping[str, str]) -> RateLimitHeaders:
    """Read the six ``x-ratelimit-*`` headers (names are case-insensitive; bad values ignored)."""
    h = _lower(headers)
    return RateLimitHeaders(
        limit_tokens=_int(h, "x-ratelimit-limit-tokens"),
        limit_requests=_int(h, "x-ratelimit-limit-requests"),
        remaining_tokens=_int(h, "x-ratelimit-remaining-tokens"),
        remaining_requests=_int(h, "x-ratelimit-remaining-requests"),
        reset_tokens_s=_dur(h, "x-ratelimit-reset-tokens"),
        reset_requests_s=_dur(h, "x-ratelimit-reset-requests"),
    )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a 429 asks for: ``retry-after-ms`` first (finer), then ``retry-after`` seconds."""
    h = _lower(headers)
    raw_ms = h.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
            if math.isfinite(ms) and ms >= 0:
                return ms / 1000.0
        except ValueError:
            pass
    raw = h.get("retry-after")
    if raw is not None:
        try:
            return parse_duration(raw)
        except ValueError:
            return None  # an HTTP date: rare from OpenAI; the caller falls back to its default
    return None
