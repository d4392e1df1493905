"""JobLocks and Heartbeat against a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from workers.locks import LOCK_PREFIX, UNACKED_INDEX, Heartbeat, JobLocks


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_one_owner_at_a_time(aredis: aioredis.Redis) -> None:
    a, b = JobLocks(aredis), JobLocks(aredis)
    assert await a.try_acquire("j")
    assert not await b.try_acquire("j")
    assert not await a.try_acquire("j")  # not re-entrant either: a second copy in one process waits
    assert await b.try_acquire("other")
    assert 19_000 <= await aredis.pttl(LOCK_PREFIX + "j") <= 20_000


async def test_many_contenders_one_winner(aredis: aioredis.Redis) -> None:
    lockers = [JobLocks(aredis) for _ in range(20)]
    won = await asyncio.gather(*(lk.try_acquire("contended") for lk in lockers))
    assert sum(won) == 1


async def test_release_only_by_the_owner(aredis: aioredis.Redis) -> None:
    a, b = JobLocks(aredis), JobLocks(aredis)
    await a.try_acquire("j")
    await b.release("j")  # not b's: nothing happens
    assert await aredis.exists(LOCK_PREFIX + "j")
    assert not await b.try_acquire("j")
    await a.release("j")
    assert not await aredis.exists(LOCK_PREFIX + "j")
    assert await b.try_acquire("j")
    await a.release("j")  # a released already: must not free b's lock
    assert await aredis.exists(LOCK_PREFIX + "j")


async def test_refresh_extends_only_own_held_locks(aredis: aioredis.Redis) -> None:
    a = JobLocks(aredis, lease_seconds=2)
    await a.try_acquire("mine")
    await aredis.pexpire(LOCK_PREFIX + "mine", 300)
    await aredis.set(LOCK_PREFIX + "theirs", "someone-else", px=300)
    await a.refresh_all()
    assert await aredis.pttl(LOCK_PREFIX + "mine") > 1500
    assert await aredis.pttl(LOCK_PREFIX + "theirs") <= 300


async def test_a_lapsed_lock_can_be_taken_and_is_not_stolen_back(aredis: aioredis.Redis) -> None:
    a, b = JobLocks(aredis, lease_seconds=1), JobLocks(aredis, lease_seconds=1)
    assert await a.try_acquire("j")
    await asyncio.sleep(1.1)  # a stopped refreshing (e.g. its process froze)
    assert await b.try_acquire("j")
    await a.refresh_all()  # a wakes up: its refresh must not extend b's lock as its own
    assert await aredis.get(LOCK_PREFIX + "j") == b._owner.encode()
    await a.release("j")
    assert await aredis.exists(LOCK_PREFIX + "j")


async def test_heartbeat_restamps_only_existing_unacked_entries(aredis: aioredis.Redis) -> None:
    await aredis.zadd(UNACKED_INDEX, {"tag-held": 1.0, "tag-other": 2.0})
    locks = JobLocks(aredis, lease_seconds=5)
    await locks.try_acquire("job-held")
    await aredis.pexpire(LOCK_PREFIX + "job-held", 500)
    tags = ["tag-held", "tag-acked"]  # tag-acked: already acked and removed from the index
    hb = Heartbeat(locks, aredis, lambda: tags, interval=0.1)
    before = time.time()
    await hb.beat()
    scores = dict(await aredis.zrange(UNACKED_INDEX, 0, -1, withscores=True))
    assert set(scores) == {b"tag-held", b"tag-other"}  # ZADD XX: nothing re-added
    assert scores[b"tag-held"] >= before
    assert scores[b"tag-other"] == 2.0  # another worker's message is left alone
    assert await aredis.pttl(LOCK_PREFIX + "job-held") > 4000


async def test_heartbeat_runs_in_the_background_and_stops(aredis: aioredis.Redis) -> None:
    await aredis.zadd(UNACKED_INDEX, {"t": 1.0})
    locks = JobLocks(aredis)
    hb = Heartbeat(locks, aredis, lambda: ["t"], interval=0.05)
    hb.start()
    hb.start()  # idempotent
    await asyncio.sleep(0.3)
    first = await aredis.zscore(UNACKED_INDEX, "t")
    assert first is not None and first > 1.0
    await hb.stop()
    await aredis.zadd(UNACKED_INDEX, {"t": 1.0})
    await asyncio.sleep(0.2)
    assert await aredis.zscore(UNACKED_INDEX, "t") == 1.0  # stopped: no more beats
    await hb.stop()  # idempotent


async def test_heartbeat_survives_a_redis_outage(aredis: aioredis.Redis, redis_url: str) -> None:
    from shared.embedded_redis import free_port

    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", retry_on_error=[])
    hb = Heartbeat(JobLocks(aredis), dead, lambda: ["t"], interval=0.05)
    hb.start()
    await asyncio.sleep(0.3)
    assert hb._task is not None and not hb._task.done()  # errors swallowed, still beating
    await hb.stop()
    await dead.aclose()


async def test_heartbeat_without_a_redis_broker_refreshes_locks(aredis: aioredis.Redis) -> None:
    locks = JobLocks(aredis, lease_seconds=5)
    await locks.try_acquire("j")
    await aredis.pexpire(LOCK_PREFIX + "j", 500)
    await Heartbeat(locks, None, lambda: ["t"]).beat()  # e.g. RabbitMQ: no unacked_index
    assert await aredis.pttl(LOCK_PREFIX + "j") > 4000
