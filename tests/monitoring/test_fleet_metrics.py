"""Fleet series on a real Redis: queue depth and age as kombu stores them, one exporter at a time."""

from __future__ import annotations

import time

import redis
from prometheus_client import CollectorRegistry

from shared.broker import QUEUES, TASK_NAME, create_celery
from shared.dlq import DLQ_KEY
from shared.fleet_metrics import LEASE_KEY, FleetCollector, FleetLease
from shared.limiter import LimitKey, LimitsConfig, RedisLimiter
from shared.metrics import LabelGuard, Metrics
from shared.queue_stats import read_queue_stats
from shared.settings import Settings


def publish(broker_url: str, queue: str, submitted_at: float, priority: int | None = None) -> None:
    app = create_celery(Settings(), broker_url)
    payload = {"job_id": f"j{submitted_at}", "submitted_at": submitted_at}
    app.send_task(TASK_NAME, args=[payload], queue=queue, priority=priority)


def collector(url: str, **kw: object) -> FleetCollector:
    return FleetCollector(
        redis_url=url, broker_url=url, queues=QUEUES, limits=LimitsConfig(),
        guard=LabelGuard(), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in registry.collect()
        for s in fam.samples
    }


def test_depth_and_age_of_the_next_job_read_from_kombus_lists(redis_url: str) -> None:
    now = time.time()
    publish(redis_url, "bulk", now - 120)  # first in: next out
    publish(redis_url, "bulk", now - 5)
    publish(redis_url, "bulk", now - 300, priority=9)  # another priority step, its own list
    stats = {q.queue: q for q in read_queue_stats(redis.Redis.from_url(redis_url), QUEUES, now)}
    assert stats["interactive"].depth == 0 and stats["interactive"].oldest_age_s == 0.0
    assert stats["bulk"].depth == 3
    assert stats["bulk"].oldest_age_s == __import__("pytest").approx(300, abs=1)
    # The consumer's view agrees: kombu's own size count.
    app = create_celery(Settings(), redis_url)
    with app.connection_for_read() as conn:
        assert conn.default_channel._size("bulk") == 3


def test_only_the_lease_holder_exports_and_another_takes_over(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.zadd(DLQ_KEY, {"job-a": 1.0, "job-b": 2.0})
    publish(redis_url, "interactive", time.time() - 30)
    regs, cols = [], []
    for _ in range(2):
        reg = CollectorRegistry()
        col = collector(redis_url)
        reg.register(col)
        regs.append(reg)
        cols.append(col)
    first, second = samples(regs[0]), samples(regs[1])
    assert first[("imgq_fleet_exporter", ())] == 1.0
    assert second[("imgq_fleet_exporter", ())] == 0.0
    assert first[("imgq_dead_letters", ())] == 2.0
    assert first[("imgq_queue_depth", (("queue", "interactive"),))] == 1.0
    assert first[("imgq_queue_oldest_age_seconds", (("queue", "interactive"),))] >= 29
    assert not any(name.startswith("imgq_queue") for name, _ in second)
    assert samples(regs[0])[("imgq_fleet_exporter", ())] == 1.0  # renewed, still the holder
    cols[0].close()  # a stopping worker hands the lease over at once
    assert samples(regs[1])[("imgq_fleet_exporter", ())] == 1.0
    assert samples(regs[1])[("imgq_dead_letters", ())] == 2.0
    cols[1].close()


def test_a_dead_holders_lease_lapses(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    dead, alive = FleetLease(r, ttl_s=0.5), FleetLease(r, ttl_s=0.5)
    assert dead.hold() and not alive.hold()
    time.sleep(0.7)  # the holder stopped renewing (killed, or no longer scraped)
    assert alive.hold() and not dead.hold()
    assert r.pttl(LEASE_KEY) > 0


def test_limiter_buckets_per_model_from_the_shared_state(redis_url: str) -> None:
    import asyncio

    import redis.asyncio as aioredis

    config = LimitsConfig.from_json('{"gpt-4o": {"tpm": 9000, "rpm": 100}}')

    async def reserve() -> None:
        client = aioredis.Redis.from_url(redis_url)
        limiter = RedisLimiter(client, config)
        await limiter.acquire(LimitKey("gpt-4o", "acct"), 1500, timeout=5)
        await limiter.aclose()
        await client.aclose()

    asyncio.run(reserve())
    reg = CollectorRegistry()
    reg.register(FleetCollector(redis_url=redis_url, broker_url=None, queues=QUEUES,
                                limits=config, guard=LabelGuard()))  # fmt: skip
    got = samples(reg)
    model = (("model", "gpt-4o"),)
    assert got[("imgq_limiter_tokens_limit", model)] == 9000
    assert got[("imgq_limiter_requests_limit", model)] == 100
    assert got[("imgq_limiter_tokens_reserved", model)] == 1500
    assert got[("imgq_limiter_in_flight", model)] == 1  # granted, never settled
    # The bucket gave 1500 and refills at 150 tokens/s since: a little above 7500, below full.
    assert 7500 <= got[("imgq_limiter_tokens_level", model)] < 9000
    assert 99 <= got[("imgq_limiter_requests_level", model)] < 100
    assert got[("imgq_limiter_waiters", (("model", "gpt-4o"), ("priority", "bulk")))] == 0
    assert not any(name.startswith("imgq_queue") for name, _ in got)  # no Redis broker given


def test_unreachable_redis_yields_no_fleet_series_and_no_error() -> None:
    from shared.embedded_redis import free_port

    reg = CollectorRegistry()
    reg.register(collector(f"redis://127.0.0.1:{free_port()}/0"))
    assert samples(reg) == {("imgq_fleet_exporter", ()): 0.0}


def test_registering_touches_nothing_and_names_do_not_clash_with_metrics() -> None:
    m = Metrics()
    m.registry.register(collector("redis://127.0.0.1:1/0"))  # no connection is made here


def test_limits_sharing_a_label_value_give_one_series(redis_url: str) -> None:
    import asyncio

    import redis.asyncio as aioredis

    config = LimitsConfig.from_json('{"m-a": {"tpm": 1000, "rpm": 10}, "m-b": {"tpm": 500}}')

    async def register() -> None:
        client = aioredis.Redis.from_url(redis_url)
        limiter = RedisLimiter(client, config)
        for key in (LimitKey("m-a", "acct1"), LimitKey("m-a", "acct2"), LimitKey("m-b", "acct1")):
            await limiter.acquire(key, 10, timeout=5)
        await limiter.aclose()
        await client.aclose()

    asyncio.run(register())
    reg = CollectorRegistry()
    # A cap of one model: "m-b" folds into "other"; two accounts of "m-a" sum into one series.
    guard = LabelGuard({"model": 1})
    reg.register(FleetCollector(redis_url=redis_url, broker_url=None, queues=QUEUES,
                                limits=config, guard=guard))  # fmt: skip
    limits = {k[1]: v for k, v in samples(reg).items() if k[0] == "imgq_limiter_tokens_limit"}
    assert limits == {(("model", "m-a"),): 2000, (("model", "other"),): 500}
