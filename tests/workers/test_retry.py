"""The retry policy, branch by branch (pure function: sampled many times, bounds checked)."""

from __future__ import annotations

import pytest

from shared import errors
from workers.retry import (
    INITIAL_BACKOFF_SECONDS,
    MAX_ATTEMPTS,
    MAX_BACKOFF_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    RETRY_AFTER_JITTER_SECONDS,
    retry_delay,
)

N = 300

PERMANENT = [
    errors.InsufficientQuotaError("quota"),
    errors.RequestTooLargeError("too large"),
    errors.BadRequestError("HTTP 400", code="invalid_value"),
    errors.InvalidImageError("bad image"),
    errors.AuthenticationError("401"),
    errors.PermissionDeniedError("403"),
    errors.NotFoundError("404"),
    errors.OutputParseError("not json"),
    errors.PromptContainsImageError("pasted"),
    errors.ImageNotFoundError("expired"),
]
RETRYABLE = [
    errors.UpstreamServerError("503"),
    errors.UpstreamTimeoutError("timeout"),
    errors.UpstreamConnectionError("reset"),
    errors.RateLimitedError("429"),  # no retry-after: backoff
    errors.StorageUnavailableError("redis down"),
]


def samples(error: errors.ImgqError, attempt: int, **kw: int) -> list[float]:
    out = [retry_delay(error, attempt, **kw) for _ in range(N)]
    assert all(d is not None for d in out)
    return [d for d in out if d is not None]


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: e.code)
def test_permanent_errors_are_never_retried(error: errors.ImgqError) -> None:
    assert not error.retryable
    assert retry_delay(error, 1) is None
    if isinstance(error, errors.InsufficientQuotaError):
        # A 429 that must never be retried, even with a retry-after on it.
        assert retry_delay(error, 1, max_attempts=100) is None


@pytest.mark.parametrize("error", RETRYABLE, ids=lambda e: e.code)
def test_retryable_errors_back_off_exponentially_with_jitter(error: errors.ImgqError) -> None:
    for attempt in range(1, MAX_ATTEMPTS):
        ceiling = min(MAX_BACKOFF_SECONDS, INITIAL_BACKOFF_SECONDS * 2 ** (attempt - 1))
        got = samples(error, attempt)
        assert all(ceiling / 10 <= d <= ceiling for d in got), (attempt, min(got), max(got))
        assert len(set(got)) > N // 2  # jittered, not a fixed delay
        assert max(got) > ceiling * 0.8 and min(got) < ceiling * 0.4  # spread over the range


def test_backoff_is_capped() -> None:
    got = samples(errors.UpstreamServerError("503"), 30, max_attempts=100)
    assert max(got) <= MAX_BACKOFF_SECONDS
    assert min(got) >= MAX_BACKOFF_SECONDS / 10


@pytest.mark.parametrize("error", RETRYABLE, ids=lambda e: e.code)
def test_attempts_run_out(error: errors.ImgqError) -> None:
    assert retry_delay(error, MAX_ATTEMPTS - 1) is not None
    assert retry_delay(error, MAX_ATTEMPTS) is None
    assert retry_delay(error, MAX_ATTEMPTS + 3) is None
    assert retry_delay(error, 2, max_attempts=2) is None
    assert retry_delay(error, 1, max_attempts=2) is not None
    assert retry_delay(error, 1, max_attempts=1) is None


@pytest.mark.parametrize("retry_after", [0.0, 0.35, 2.0, 7.5])
def test_retry_after_is_honoured_plus_a_little_jitter(retry_after: float) -> None:
    got = samples(errors.RateLimitedError("429", retry_after=retry_after), 1)
    assert all(retry_after <= d <= retry_after + RETRY_AFTER_JITTER_SECONDS for d in got)
    assert len(set(got)) > N // 2


def test_retry_after_beats_exponential_backoff_on_a_late_attempt() -> None:
    # Attempt 4 alone would back off up to 4 s; the server said 0.2 s.
    got = samples(errors.RateLimitedError("429", retry_after=0.2), 4)
    assert max(got) <= 0.2 + RETRY_AFTER_JITTER_SECONDS


def test_retry_after_is_capped_and_never_negative() -> None:
    huge = samples(errors.RateLimitedError("429", retry_after=3600.0), 1)
    assert all(
        MAX_RETRY_AFTER_SECONDS <= d <= MAX_RETRY_AFTER_SECONDS + RETRY_AFTER_JITTER_SECONDS
        for d in huge
    )
    negative = samples(errors.RateLimitedError("429", retry_after=-5.0), 1)
    assert all(0 <= d <= RETRY_AFTER_JITTER_SECONDS for d in negative)


def test_rate_limited_out_of_attempts_is_not_retried() -> None:
    assert retry_delay(errors.RateLimitedError("429", retry_after=0.1), MAX_ATTEMPTS) is None
