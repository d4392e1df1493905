"""Leases with fencing tokens, the fenced result write, and the heartbeat, against a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from shared.jobstate import OPEN_JOBS, read_state, state_key
from workers.locks import (
    LOCK_PREFIX,
    UNACKED_INDEX,
    Heartbeat,
    JobLocks,
    Lease,
    LeaseLostError,
    delete_if_owner,
)

RESULT = "imgq:result:j"


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def take(locks: JobLocks, job_id: str = "j") -> Lease:
    got = await locks.acquire(job_id)
    assert isinstance(got, Lease), got
    return got


async def commit(locks: JobLocks, lease: Lease, status: str, text: str = "") -> int:
    doc = json.dumps({"status": status, "text": text})
    return await locks.commit(lease, status, result_key=RESULT, result_json=doc, result_ttl=60)


async def stored(aredis: aioredis.Redis) -> dict[str, str]:
    raw = await aredis.get(RESULT)
    return json.loads(raw) if raw else {}  # type: ignore[no-any-return]


async def test_one_owner_at_a_time_with_increasing_tokens(aredis: aioredis.Redis) -> None:
    a, b = JobLocks(aredis), JobLocks(aredis)
    first = await take(a)
    assert first.token == 1 and first.deliveries == 1
    assert await b.acquire("j") == "held"
    assert 19_000 <= await aredis.pttl(LOCK_PREFIX + "j") <= 20_000
    await a.release(first)
    second = await take(b)
    assert second.token == 2 and second.deliveries == 2
    state = await read_state(aredis, "j")
    assert state["token"] == "2" and state["status"] == "running"
    assert await aredis.zscore(OPEN_JOBS, "j") is not None


async def test_many_contenders_one_winner(aredis: aioredis.Redis) -> None:
    lockers = [JobLocks(aredis) for _ in range(20)]
    got = await asyncio.gather(*(lk.acquire("race") for lk in lockers))
    assert sum(isinstance(g, Lease) for g in got) == 1


async def test_a_lapsed_owner_is_fenced_out_before_its_call(aredis: aioredis.Redis) -> None:
    old, new = JobLocks(aredis, lease_seconds=0.2), JobLocks(aredis)
    stale = await take(old)
    await old.fence(stale)  # current: passes and extends
    await asyncio.sleep(0.4)  # paused past its lease (Redis's clock decides)
    fresh = await take(new)
    assert fresh.token == stale.token + 1
    with pytest.raises(LeaseLostError):
        await old.fence(stale)
    assert stale.lost
    await new.fence(fresh)


async def test_fenced_writes_keep_the_first_success(aredis: aioredis.Redis) -> None:
    old, new = JobLocks(aredis, lease_seconds=0.2), JobLocks(aredis)
    stale = await take(old)
    assert await commit(old, stale, "running") == 1
    await asyncio.sleep(0.4)
    fresh = await take(new)
    # The lapsed owner may not write a non-success over the new owner's job ...
    assert await commit(old, stale, "running") == 0
    assert await commit(old, stale, "failed") == 0
    # ... but its paid answer is stored while the job has no success (code 2) ...
    assert await commit(old, stale, "succeeded", "old answer") == 2
    assert (await stored(aredis))["text"] == "old answer"
    # ... and the new owner then stops before its own call, and cannot replace it.
    with pytest.raises(LeaseLostError):
        await new.fence(fresh)
    assert await commit(new, fresh, "succeeded", "new answer") == 0
    assert await commit(new, fresh, "failed") == 0
    assert (await stored(aredis))["text"] == "old answer"
    assert await aredis.zscore(OPEN_JOBS, "j") is None  # finished: out of the open index
    assert await new.acquire("j") == "done"


async def test_a_failure_can_be_replaced_only_by_a_success(aredis: aioredis.Redis) -> None:
    locks = JobLocks(aredis)
    lease = await take(locks)
    assert await commit(locks, lease, "failed") == 1
    assert await commit(locks, lease, "running") == 0
    assert await commit(locks, lease, "succeeded", "paid") == 1
    assert (await stored(aredis))["status"] == "succeeded"


async def test_dry_run_writes_nothing(aredis: aioredis.Redis) -> None:
    locks = JobLocks(aredis)
    lease = await take(locks)
    assert await locks.commit(lease, "succeeded", dry_run=True) == 1
    assert (await read_state(aredis, "j"))["status"] == "running"
    assert await aredis.get(RESULT) is None


async def test_release_uncounted_hands_the_delivery_back(aredis: aioredis.Redis) -> None:
    locks = JobLocks(aredis)
    lease = await take(locks)
    await locks.release(lease, uncount=True)
    state = await read_state(aredis, "j")
    assert state["deliveries"] == "0" and state["status"] == "queued"
    assert not await aredis.exists(LOCK_PREFIX + "j")
    again = await take(locks)
    assert again.deliveries == 1 and again.token == 2


async def test_release_never_frees_a_newer_owners_lease(aredis: aioredis.Redis) -> None:
    a, b = JobLocks(aredis, lease_seconds=0.2), JobLocks(aredis)
    stale = await take(a)
    await asyncio.sleep(0.4)
    fresh = await take(b)
    await a.release(stale)
    assert await aredis.get(LOCK_PREFIX + "j") == fresh.holder.encode()


async def test_acquire_reports_the_deadline_and_redis_time(aredis: aioredis.Redis) -> None:
    await aredis.hset(state_key("d"), mapping={"expires_at": "1234.5", "status": "queued"})
    lease = await take(JobLocks(aredis), "d")
    assert lease.expires_at == 1234.5
    assert abs(lease.now - time.time()) < 5  # Redis TIME (same host here)


async def test_compare_and_delete(aredis: aioredis.Redis) -> None:
    await aredis.set("k", "me")
    assert not await delete_if_owner(aredis, "k", "you")
    assert await delete_if_owner(aredis, "k", "me")


async def test_heartbeat_extends_leases_and_stamps_with_redis_time(aredis: aioredis.Redis) -> None:
    await aredis.zadd(UNACKED_INDEX, {"t": 1.0})
    locks = JobLocks(aredis, lease_seconds=5)
    lease = await take(locks)
    await aredis.pexpire(LOCK_PREFIX + "j", 500)
    hb = Heartbeat(locks, aredis, lambda: ["t", "gone"], interval=0.05)
    hb.start()
    hb.start()  # idempotent
    await asyncio.sleep(0.3)
    await hb.stop()
    assert await aredis.pttl(LOCK_PREFIX + "j") > 4000
    stamp = await aredis.zscore(UNACKED_INDEX, "t")
    redis_now = await aredis.time()
    assert stamp is not None and abs(stamp - redis_now[0]) < 5
    assert await aredis.zscore(UNACKED_INDEX, "gone") is None  # XX: never re-adds acked tags
    await aredis.zadd(UNACKED_INDEX, {"t": 1.0})
    await asyncio.sleep(0.2)
    assert await aredis.zscore(UNACKED_INDEX, "t") == 1.0  # stopped: no more beats
    await hb.stop()
    assert not lease.lost


async def test_heartbeat_marks_a_lapsed_lease_lost(aredis: aioredis.Redis) -> None:
    locks = JobLocks(aredis, lease_seconds=5)
    lease = await take(locks)
    await aredis.set(LOCK_PREFIX + "j", "someone-else:9")
    await Heartbeat(locks, None, list).beat()
    assert lease.lost
    assert await aredis.get(LOCK_PREFIX + "j") == b"someone-else:9"


async def test_heartbeat_survives_a_redis_outage(aredis: aioredis.Redis) -> None:
    from shared.embedded_redis import free_port

    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", retry_on_error=[])
    hb = Heartbeat(JobLocks(aredis), dead, lambda: ["t"], interval=0.05)
    hb.start()
    await asyncio.sleep(0.3)
    assert hb._task is not None and not hb._task.done()  # errors swallowed, still beating
    await hb.stop()
    await dead.aclose()
