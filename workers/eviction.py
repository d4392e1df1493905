"""Refuse to start a worker on a Redis that may evict imgq's keys.

Every imgq key in Redis carries state that must not vanish early: a job's lease (evicted, a
second worker takes the job and pays again), its state and result, the broker's queues (no
TTL). ``volatile-*`` policies evict keys *with* a TTL, which is nearly all of imgq's, and the
``allkeys-*`` ones any key: so the only safe settings are ``maxmemory-policy noeviction`` or
no ``maxmemory`` at all (then nothing is ever evicted). Any other setting stops the worker,
unless ``IMGQ_ALLOW_EVICTING_REDIS=true`` (it then logs a warning at every start).

>>> eviction_risk({"maxmemory": "0", "maxmemory-policy": "allkeys-lru"}) is None
True
>>> eviction_risk({"maxmemory": "1073741824", "maxmemory-policy": "noeviction"}) is None
True
>>> print(eviction_risk({"maxmemory": "1073741824", "maxmemory-policy": "volatile-lru"}))
maxmemory-policy is volatile-lru with maxmemory 1073741824: Redis may evict imgq's leases, job state and results (set maxmemory-policy noeviction)
"""

from __future__ import annotations

import logging

import redis
from redis.exceptions import RedisError, ResponseError

from shared.errors import ConfigurationError

log = logging.getLogger(__name__)


def eviction_risk(config: dict[str, str]) -> str | None:
    """Why this Redis configuration could evict imgq's keys, or None when it cannot."""
    policy = config.get("maxmemory-policy", "noeviction")
    maxmemory = config.get("maxmemory", "0")
    if policy == "noeviction" or maxmemory in ("0", ""):
        return None
    return (
        f"maxmemory-policy is {policy} with maxmemory {maxmemory}: Redis may evict imgq's "
        "leases, job state and results (set maxmemory-policy noeviction)"
    )


def check_redis_eviction(url: str, *, allow: bool) -> None:
    """Raise ConfigurationError when Redis may evict keys (a warning with ``allow``)."""
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        config: dict[str, str] = {}
        for name in ("maxmemory", "maxmemory-policy"):
            got = client.config_get(name)
            config.update({str(k): str(v) for k, v in got.items()})
    except ResponseError as exc:  # CONFIG renamed or disabled (managed Redis): cannot tell
        log.warning("could not read Redis's eviction policy (%s): make sure it is noeviction", exc)
        return
    except RedisError as exc:
        log.warning("could not check Redis's eviction policy now (%s)", exc)
        return
    finally:
        client.close()
    risk = eviction_risk(config)
    if risk is None:
        return
    if allow:
        log.warning("IMGQ_ALLOW_EVICTING_REDIS is set: %s", risk)
        return
    raise ConfigurationError(f"{risk}; or set IMGQ_ALLOW_EVICTING_REDIS=true to start anyway")
