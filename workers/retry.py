"""Retry policy: which failures are tried again, and after how long. Ours alone: the SDK's is off.

>>> from shared.errors import UpstreamServerError, InsufficientQuotaError
>>> retry_delay(InsufficientQuotaError("no credit"), attempt=1) is None
True
>>> 0 < retry_delay(UpstreamServerError("503"), attempt=1) <= INITIAL_BACKOFF_SECONDS
True
"""

from __future__ import annotations

import random

from shared.errors import ImgqError, RateLimitedError

MAX_ATTEMPTS = 5
INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
# A server asking for longer than this is treated as an outage: we still honour it, capped.
MAX_RETRY_AFTER_SECONDS = 120.0
RETRY_AFTER_JITTER_SECONDS = 0.25


def retry_delay(
    error: ImgqError, attempt: int, *, max_attempts: int = MAX_ATTEMPTS
) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` to fail the job now.

    ``attempt`` is the number of the attempt that just failed (1-based).
    """
    # Permanent errors (bad input, 400/401/403/404, insufficient_quota, request_too_large):
    # another try would fail the same way and may cost money.
    if not error.retryable:
        return None
    # Out of attempts: the job fails with the last error's code, retryable=True on record.
    if attempt >= max_attempts:
        return None
    # 429 with retry-after: the server said when; a little jitter spreads the fleet's restart.
    if isinstance(error, RateLimitedError) and error.retry_after is not None:
        wait = min(max(error.retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
        return wait + random.uniform(0, RETRY_AFTER_JITTER_SECONDS)
    # 5xx, timeouts, connection errors, 429 without retry-after: exponential backoff, full jitter.
    ceiling = min(MAX_BACKOFF_SECONDS, INITIAL_BACKOFF_SECONDS * 2 ** (attempt - 1))
    return random.uniform(ceiling / 10, ceiling)
