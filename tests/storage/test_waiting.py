"""iter_results / wait_result: finish order, already-finished jobs, missed events, timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from shared.jobs import Result
from shared.storage import RedisJobEvents, RedisResultStore, iter_results, wait_result

DAY = 24 * 3600


@pytest.fixture
def stores(aredis: aioredis.Redis) -> tuple[RedisResultStore, RedisJobEvents]:
    return RedisResultStore(aredis, ttl_seconds=DAY), RedisJobEvents(aredis)


async def finish(
    store: RedisResultStore,
    events: RedisJobEvents | None,
    job_id: str,
    status: str = "succeeded",
    delay: float = 0.0,
) -> None:
    await asyncio.sleep(delay)
    await store.put(Result(job_id=job_id, status=status))  # type: ignore[arg-type]
    if events is not None:
        await events.publish(job_id, status)


async def test_yields_in_finish_order(stores: tuple[RedisResultStore, RedisJobEvents]) -> None:
    store, events = stores
    ids = ["a", "b", "c", "d"]
    for j in ids:
        await store.create(Result(job_id=j))
    delays = {"c": 0.1, "a": 0.3, "d": 0.5, "b": 0.7}
    tasks = [asyncio.create_task(finish(store, events, j, delay=d)) for j, d in delays.items()]
    started = time.monotonic()
    got = [r.job_id async for r in iter_results(store, events, ids, timeout=10)]
    assert got == ["c", "a", "d", "b"]
    assert time.monotonic() - started < 2.5  # events, not the 1 s re-check, drove this
    await asyncio.gather(*tasks)


async def test_failed_counts_as_finished_and_running_does_not(
    stores: tuple[RedisResultStore, RedisJobEvents],
) -> None:
    store, events = stores
    await store.create(Result(job_id="f"))
    task = asyncio.create_task(finish(store, events, "f", "running", delay=0.05))
    later = asyncio.create_task(finish(store, events, "f", "failed", delay=0.4))
    r = await wait_result(store, events, "f", timeout=10)
    assert r.status == "failed"
    await asyncio.gather(task, later)


async def test_already_finished_results_come_first_without_waiting(
    stores: tuple[RedisResultStore, RedisJobEvents],
) -> None:
    store, events = stores
    for j in ("x", "y"):
        await finish(store, events, j)
    await store.create(Result(job_id="z"))
    task = asyncio.create_task(finish(store, events, "z", delay=0.3))
    gen = iter_results(store, events, ["x", "z", "y"], timeout=10)
    started = time.monotonic()
    first_two = {(await anext(gen)).job_id, (await anext(gen)).job_id}
    assert first_two == {"x", "y"}
    assert time.monotonic() - started < 0.2
    assert (await anext(gen)).job_id == "z"
    with pytest.raises(StopAsyncIteration):
        await anext(gen)
    await task


async def test_all_finished_never_subscribes(
    stores: tuple[RedisResultStore, RedisJobEvents], aredis: aioredis.Redis
) -> None:
    store, events = stores
    await finish(store, events, "done")
    got = [r async for r in iter_results(store, events, ["done", "done"], timeout=0)]
    assert [r.job_id for r in got] == ["done"]  # a repeated id is yielded once


async def test_a_finish_without_an_event_is_found_by_the_recheck(
    stores: tuple[RedisResultStore, RedisJobEvents],
) -> None:
    store, events = stores
    await store.create(Result(job_id="quiet"))
    task = asyncio.create_task(finish(store, None, "quiet", delay=0.2))  # no publish
    started = time.monotonic()
    r = await wait_result(store, events, "quiet", timeout=10)
    assert r.status == "succeeded"
    assert time.monotonic() - started < 3.5
    await task


async def test_finish_between_check_and_subscribe_is_not_missed(
    stores: tuple[RedisResultStore, RedisJobEvents],
) -> None:
    store, events = stores
    await store.create(Result(job_id="race"))
    gen = iter_results(store, events, ["race"], timeout=10)
    # Finish (with its event) before the generator has subscribed: the event is lost to it.
    await finish(store, events, "race")
    r = await asyncio.wait_for(anext(gen), 5)
    assert r.job_id == "race"
    await gen.aclose()  # type: ignore[attr-defined]


async def test_times_out(stores: tuple[RedisResultStore, RedisJobEvents]) -> None:
    store, events = stores
    await store.create(Result(job_id="slow"))
    await finish(store, events, "quick")
    got: list[str] = []
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="1 job"):
        async for r in iter_results(
            store,
            events,
            [
                "quick",
                "slow",
            ],
            timeout=0.5,
        ):
            got.append(r.job_id)
    elapsed = time.monotonic() - started
    assert got == ["quick"]
    assert 0.5 <= elapsed < 2.5
    with pytest.raises(TimeoutError):
        await wait_result(store, events, "never-submitted", timeout=0.2)


async def test_timeout_holds_under_a_busy_channel(
    stores: tuple[RedisResultStore, RedisJobEvents],
) -> None:
    """Unrelated events keep arriving: the deadline must still be honoured."""
    store, events = stores

    async def chatter() -> None:
        while True:
            await events.publish("someone-else", "running")
            await asyncio.sleep(0.01)

    noise = asyncio.create_task(chatter())
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await wait_result(store, events, "never", timeout=0.5)
    assert time.monotonic() - started < 2.5
    noise.cancel()
