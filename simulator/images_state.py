"""The Images API's own state on the simulator app: images-per-minute buckets, images kept for
URL answers, counts for ``GET /_sim/images/stats``, and the admission of one image request.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from simulator import errors
from simulator.durations import format_duration
from simulator.ratelimit import Bucket
from simulator.state import SimState
from simulator.stats import _max_in_window

# A prompt containing this word is refused by the simulated safety system (400 moderation_blocked).
MODERATION_TRIGGER = "forbidden-fox"


def moderation_blocked() -> errors.ApiError:
    return errors.ApiError(
        400,
        "Your request was rejected as a result of our safety system. Your request may "
        "contain content that is not allowed by our safety system.",
        type="image_generation_user_error",
        code="moderation_blocked",
    )


@dataclass
class ImagesState:
    """IPM buckets, images kept for URL answers, and what was generated (for tests)."""

    ipm: int
    buckets: dict[str, Bucket] = field(default_factory=dict)
    urls: OrderedDict[str, tuple[bytes, str]] = field(default_factory=OrderedDict)
    times: dict[str, array[float]] = field(default_factory=dict)
    amounts: dict[str, array[float]] = field(default_factory=dict)
    rate_limited: int = 0
    moderation_blocked: int = 0
    t0: float = field(default_factory=time.monotonic)

    def bucket(self, model: str, now: float) -> Bucket:
        if model not in self.buckets:
            self.buckets[model] = Bucket(self.ipm, now)
        return self.buckets[model]

    def headers(self, model: str, now: float) -> dict[str, str]:
        b = self.bucket(model, now)
        return {
            "x-ratelimit-limit-images": str(self.ipm),
            "x-ratelimit-remaining-images": str(b.remaining(now)),
            "x-ratelimit-reset-images": format_duration(b.time_to_full(now)),
        }

    def reset(self) -> None:
        """Refill every IPM bucket and forget the counts (images kept for URLs stay)."""
        self.buckets.clear()
        self.times.clear()
        self.amounts.clear()
        self.rate_limited = self.moderation_blocked = 0
        self.t0 = time.monotonic()

    def admitted(self, model: str, n: int, now: float) -> None:
        self.times.setdefault(model, array("d")).append(now - self.t0)
        self.amounts.setdefault(model, array("d")).append(float(n))

    def snapshot(self) -> dict[str, Any]:
        per_model = {
            model: {
                "images": int(sum(self.amounts[model])),
                "requests": len(times),
                "max_images_in_any_60s": int(_max_in_window(times, self.amounts[model], 60.0)),
            }
            for model, times in self.times.items()
        }
        return {
            "ipm": self.ipm,
            "by_model": per_model,
            "rate_limited": self.rate_limited,
            "moderation_blocked": self.moderation_blocked,
        }


IMAGES = web.AppKey("images_state", ImagesState)


IMAGES = web.AppKey("images_state", ImagesState)


def ipm_error(model: str, limit: int, used: int, requested: int, wait: float) -> errors.ApiError:
    err = errors.ApiError(
        429,
        f"Rate limit reached for {model} in organization {errors.ORG} on images per min (IPM): "
        f"Limit {limit}, Used {used}, Requested {requested}. Please try again in "
        f"{format_duration(wait)}. Visit {errors.RATE_LIMITS_URL} to learn more.",
        type="images",
        code="rate_limit_exceeded",
    )
    err.headers["retry-after"] = str(max(1, math.ceil(wait)))
    err.headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
    return err


def admit(
    state: SimState, images: ImagesState, model: str, n: int, tokens: int, now: float
) -> dict[str, str]:
    """Take 1 request, ``tokens`` and ``n`` images, or raise the 429 OpenAI would send."""
    bucket = images.bucket(model, now)
    if n > images.ipm:
        err = errors.ApiError(
            429,
            f"Request too large for {model} in organization {errors.ORG} on images per min "
            f"(IPM): Limit {images.ipm}, Requested {n}.",
            type="images",
            code="rate_limit_exceeded",
        )
        err.headers.update(images.headers(model, now))
        raise err
    wait = bucket.wait_for(n, now)
    if wait > 0:
        err = ipm_error(model, images.ipm, images.ipm - bucket.remaining(now), n, wait)
        err.headers.update(state.limits.headers(model, now))
        err.headers.update(images.headers(model, now))
        raise err
    admission = state.limits.admit(model, tokens, now)
    if admission.error is not None:
        admission.error.headers.update(admission.headers)
        admission.error.headers.update(images.headers(model, now))
        raise admission.error
    bucket.take(n)
    return {**admission.headers, **images.headers(model, now)}
