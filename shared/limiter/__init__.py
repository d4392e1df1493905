"""Fleet-wide TPM/RPM limiter in Redis, plus adaptive local concurrency. See the README, "Rate limiting"."""

from shared.limiter.adaptive import AdaptiveConcurrency
from shared.limiter.base import PRIORITIES, Limiter, LimitSnapshot, Priority, Reservation
from shared.limiter.config import TIER_DEFAULTS, LimitsConfig, ModelLimits
from shared.limiter.headers import (
    RateLimitHeaders,
    parse_duration,
    parse_ratelimit_headers,
    retry_after_seconds,
)
from shared.limiter.keys import LimitKey, key_fingerprint
from shared.limiter.redis_limiter import RedisLimiter

__all__ = [
    "PRIORITIES",
    "TIER_DEFAULTS",
    "AdaptiveConcurrency",
    "LimitKey",
    "LimitSnapshot",
    "Limiter",
    "LimitsConfig",
    "ModelLimits",
    "Priority",
    "RateLimitHeaders",
    "RedisLimiter",
    "Reservation",
    "key_fingerprint",
    "parse_duration",
    "parse_ratelimit_headers",
    "retry_after_seconds",
]
