"""Fleet-wide series (queues, dead letters, limiter buckets), exported by ONE process of the fleet.

Every worker registers a `FleetCollector` on its registry. At each scrape the collector tries to
hold a Redis lease (``imgq:metrics:fleet-exporter``, a `redis.lock.Lock` with a TTL); only the
holder reads the broker and Redis and yields the fleet series, so ``sum()`` over the fleet never
counts a queue twice. The holder renews the lease on every scrape; when it dies or stops being
scraped, the lease lapses after ``lease_ttl_s`` and the next worker scraped takes over. Every
process exports ``imgq_fleet_exporter`` (1 on the holder, 0 elsewhere) so "no exporter" is visible.

Reads happen at scrape time (the Prometheus way: no background loop, no stale cache) with short
socket timeouts; an unreachable Redis yields no fleet series rather than failing the scrape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from redis.exceptions import LockError, RedisError

from shared.broker import QUEUES
from shared.dlq import DLQ_KEY
from shared.errors import ImgqError
from shared.limiter import LimitsConfig, LimitSnapshot, RedisLimiter
from shared.metrics import LabelGuard
from shared.queue_stats import UNACKED_KEY, read_queue_stats
from shared.settings import Settings

__all__ = ["FAMILIES", "LEASE_KEY", "FleetCollector", "FleetLease"]

log = logging.getLogger(__name__)
LEASE_KEY = "imgq:metrics:fleet-exporter"
SOCKET_TIMEOUT_S = 2.0


class FleetLease:
    """At most one holder across the fleet; ``hold()`` takes or renews it, never blocks."""

    def __init__(self, client: redis.Redis, *, ttl_s: float = 45.0, key: str = LEASE_KEY) -> None:
        # thread_local=False: each scrape runs on a new HTTP-server thread, the token must not be.
        self._lock = client.lock(key, timeout=ttl_s, thread_local=False)

    def hold(self) -> bool:
        try:
            if self._lock.owned():
                self._lock.reacquire()  # atomic: renews only while the token is still ours
                return True
            return bool(self._lock.acquire(blocking=False))
        except LockError:  # lost between owned() and reacquire(): someone else holds it now
            return False

    def release(self) -> None:
        try:
            if self._lock.owned():
                self._lock.release()
        except (LockError, RedisError):
            pass  # it lapses on its own


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"imgq_{name}", doc, labels=list(labels))


FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fleet_exporter": ("1 in the process exporting the fleet-wide series, else 0.", ()),
    "queue_depth": ("Jobs waiting in the broker queue (not yet delivered).", ("queue",)),
    "queue_oldest_age_seconds": ("Since submit, of the job next in line (0: empty).", ("queue",)),
    "queue_unacked": ("Messages delivered to workers and not yet acked, fleet-wide.", ()),
    "dead_letters": ("Jobs in the dead-letter set (imgq dlq).", ()),
    "limiter_tokens_limit": ("TPM the fleet limiter enforces.", ("model",)),
    "limiter_tokens_level": (
        "Token bucket level (refills at TPM/60 per s; < 0: debt).",
        ("model",),
    ),
    "limiter_tokens_reserved": ("Tokens taken by calls still in flight.", ("model",)),
    "limiter_requests_limit": ("RPM the fleet limiter enforces.", ("model",)),
    "limiter_requests_level": ("Request bucket level (refills at RPM/60 per s).", ("model",)),
    "limiter_in_flight": ("Calls granted and not yet settled or released.", ("model",)),
    "limiter_waiters": ("Calls waiting for capacity, fleet-wide.", ("model", "priority")),
    "limiter_cooldown_seconds": ("Fleet-wide 429 pause left (0: none).", ("model",)),
}


class FleetCollector:
    """A prometheus_client collector; register it on the worker's registry."""

    def __init__(
        self,
        *,
        redis_url: str,
        broker_url: str | None,
        queues: Sequence[str],
        limits: LimitsConfig,
        guard: LabelGuard,
        lease_ttl_s: float = 45.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis_url = redis_url
        # Queues are read only from a Redis broker (RabbitMQ has its own exporter).
        redis_schemes = ("redis://", "rediss://", "unix://")
        self._broker_url = broker_url if (broker_url or "").startswith(redis_schemes) else None
        self._queues = tuple(queues)
        self._limits = limits
        self._guard = guard
        self._ttl = lease_ttl_s
        self._clock = clock
        self._clients: tuple[redis.Redis, redis.Redis | None, FleetLease] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, redis_url: str, broker_url: str | None, guard: LabelGuard
    ) -> FleetCollector:
        limits = LimitsConfig.from_settings(settings)
        return cls(
            redis_url=redis_url, broker_url=broker_url, queues=QUEUES, limits=limits, guard=guard
        )

    def _connect(self) -> tuple[redis.Redis, redis.Redis | None, FleetLease]:
        if self._clients is None:  # lazily, in the scraping process (after any fork)
            r = redis.Redis.from_url(self._redis_url, socket_timeout=SOCKET_TIMEOUT_S)
            broker = None
            if self._broker_url:
                broker = redis.Redis.from_url(self._broker_url, socket_timeout=SOCKET_TIMEOUT_S)
            self._clients = (r, broker, FleetLease(r, ttl_s=self._ttl))
        return self._clients

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not touch Redis.
        return [_gauge(name, doc, labels) for name, (doc, labels) in FAMILIES.items()]

    def collect(self) -> Iterable[Metric]:
        r, broker, lease = self._connect()
        fams = {name: _gauge(name, doc, labels) for name, (doc, labels) in FAMILIES.items()}
        try:
            leader = lease.hold()
        except RedisError:
            leader = False
        fams["fleet_exporter"].add_metric([], 1.0 if leader else 0.0)
        yield fams.pop("fleet_exporter")
        if not leader:
            return
        try:
            if broker is not None:
                for q in read_queue_stats(broker, self._queues, self._clock()):
                    fams["queue_depth"].add_metric([q.queue], q.depth)
                    fams["queue_oldest_age_seconds"].add_metric([q.queue], q.oldest_age_s)
                fams["queue_unacked"].add_metric([], broker.hlen(UNACKED_KEY))
            fams["dead_letters"].add_metric([], r.zcard(DLQ_KEY))
            for model, snaps in self._limit_snapshots().items():
                self._add_limits(fams, model, snaps)
        except (RedisError, OSError, ImgqError) as exc:  # the limiter wraps Redis errors
            log.warning("fleet metrics: Redis unavailable (%s)", type(exc).__name__)
            return
        yield from fams.values()

    @staticmethod
    def _add_limits(
        fams: dict[str, GaugeMetricFamily], model: str, snaps: Sequence[LimitSnapshot]
    ) -> None:
        """One limit per (model, account): accounts are summed, one series per model."""

        def add(name: str, value: float, *extra: str) -> None:
            fams[name].add_metric([model, *extra], value)

        add("limiter_tokens_limit", sum(s.tpm for s in snaps))
        add("limiter_tokens_level", sum(s.tokens_level for s in snaps))
        add("limiter_tokens_reserved", sum(s.tokens_reserved for s in snaps))
        add("limiter_requests_limit", sum(s.rpm for s in snaps))
        add("limiter_requests_level", sum(s.requests_level for s in snaps))
        add("limiter_in_flight", sum(s.in_flight for s in snaps))
        add("limiter_waiters", sum(s.waiting_interactive for s in snaps), "interactive")
        add("limiter_waiters", sum(s.waiting_bulk for s in snaps), "bulk")
        add("limiter_cooldown_seconds", max(s.cooldown_s for s in snaps))

    def _limit_snapshots(self) -> dict[str, list[LimitSnapshot]]:
        """Every limit any worker registered, by `model` label value (accounts summed)."""

        async def read() -> list[LimitSnapshot]:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(self._redis_url, socket_timeout=SOCKET_TIMEOUT_S)
            try:
                limiter = RedisLimiter(client, self._limits)
                return [await limiter.snapshot(k) for k in await limiter.known_keys()]
            finally:
                await client.aclose()

        by_model: dict[str, list[LimitSnapshot]] = {}
        for snap in asyncio.run(read()):  # the scrape thread has no loop of its own
            # Grouped by the label value: two names may map to one (a dated snapshot, "other"),
            # and one series per label set is all an exposition may hold.
            by_model.setdefault(self._guard("model", snap.key.model), []).append(snap)
        return by_model

    def close(self) -> None:
        if self._clients is not None:
            r, broker, lease = self._clients
            lease.release()
            r.close()
            if broker is not None:
                broker.close()
            self._clients = None
