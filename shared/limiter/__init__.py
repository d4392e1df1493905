"""Fleet-wide token/request/image buckets and one fleet-wide queue of waiters in Redis, plus
adaptive local concurrency. See the README, "Rate limiting"."""

from shared.limiter.adaptive import AdaptiveConcurrency
from shared.limiter.base import PRIORITIES, Limiter, LimitSnapshot, Priority, Reservation
from shared.limiter.config import LimitsConfig, ModelLimits, tier_defaults
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
    "tier_defaults",
]
