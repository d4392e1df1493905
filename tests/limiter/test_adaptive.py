"""AdaptiveConcurrency: slots, priorities, slow start, AIMD, latency guard, local cap."""

from __future__ import annotations

import asyncio

import pytest

from shared.limiter import AdaptiveConcurrency


class FakeTime:
    """A clock the test moves (only paces the decreases; nothing sleeps on it)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def hold(ac: AdaptiveConcurrency, n: int) -> tuple[list[asyncio.Task[None]], asyncio.Event]:
    """Occupy ``n`` slots until the returned event is set."""
    release = asyncio.Event()

    async def body() -> None:
        async with ac.slot():
            await release.wait()

    tasks = [asyncio.create_task(body()) for _ in range(n)]
    await asyncio.sleep(0)
    return tasks, release


async def test_slots_cap_in_flight_and_hand_over() -> None:
    ac = AdaptiveConcurrency(initial=3, minimum=1, maximum=10)
    peak = 0

    async def body() -> None:
        nonlocal peak
        async with ac.slot():
            peak = max(peak, ac.in_flight)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(body() for _ in range(20)))
    assert peak == 3 and ac.in_flight == 0 and ac.waiting == 0


async def test_slow_start_grows_only_while_saturated() -> None:
    ac = AdaptiveConcurrency(initial=4, minimum=1, maximum=64)
    ac.on_success(0.1)  # nothing in flight: the cap is not the bottleneck
    assert ac.limit == 4
    tasks, release = await hold(ac, 14)  # 4 running, 10 waiting
    for _ in range(4):
        ac.on_success(0.1)  # all slots busy, latency steady: +1 each (slow start)
    assert ac.limit == 8 and ac.in_flight == 8 and ac.waiting == 6  # the new slots were handed out
    ac.on_success(0.1, capacity_wait_s=2.0)  # tokens, not slots, are short: do not grow
    assert ac.limit == 8
    release.set()
    await asyncio.gather(*tasks)


async def test_overload_halves_once_per_episode_then_grows_additively() -> None:
    clock = FakeTime()
    ac = AdaptiveConcurrency(initial=32, minimum=2, maximum=64, backoff_s=1.0, clock=clock)
    ac.on_overload()
    ac.on_overload()  # the same burst of 429s: counted once
    assert ac.limit == 16 and not ac.slow_start
    clock.t = 2.0
    ac.on_overload()
    assert ac.limit == 8
    tasks, release = await hold(ac, 20)
    for _ in range(8):
        ac.on_success(0.1)  # congestion avoidance: +1/limit per success, ~+1 per round trip
    assert ac.limit == 8
    for _ in range(10):
        ac.on_success(0.1)
    assert ac.limit == 10
    release.set()
    await asyncio.gather(*tasks)
    for _ in range(10):
        clock.t += 2
        ac.on_overload()
    assert ac.limit == 2  # never below the minimum


async def test_latency_guard_trims() -> None:
    clock = FakeTime()
    ac = AdaptiveConcurrency(initial=20, minimum=1, maximum=64, clock=clock)
    ac.on_success(0.1)
    ac.on_success(0.5)  # 5x the baseline: latency does not hold
    assert ac.limit == 18


async def test_maximum_is_a_hard_cap() -> None:
    ac = AdaptiveConcurrency(initial=100, minimum=1, maximum=6)
    assert ac.limit == 6
    tasks, release = await hold(ac, 6)
    for _ in range(50):
        ac.on_success(0.1)
    assert ac.limit == 6
    release.set()
    await asyncio.gather(*tasks)


async def test_interactive_first_bulk_not_starved() -> None:
    ac = AdaptiveConcurrency(initial=1, minimum=1, maximum=1, burst=3)
    tasks, release = await hold(ac, 1)
    order: list[str] = []

    async def one(p: str) -> None:
        async with ac.slot(p):  # type: ignore[arg-type]
            order.append(p)
            await asyncio.sleep(0)

    waiters = [asyncio.create_task(one("bulk")) for _ in range(3)]
    await asyncio.sleep(0)
    waiters += [asyncio.create_task(one("interactive")) for _ in range(7)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks, *waiters)
    assert order == ["interactive"] * 3 + ["bulk"] + ["interactive"] * 3 + ["bulk"] + [
        "interactive",
        "bulk",
    ]


async def test_cancelled_waiter_frees_its_place() -> None:
    ac = AdaptiveConcurrency(initial=1, minimum=1, maximum=1)
    tasks, release = await hold(ac, 1)
    w = asyncio.create_task(ac.slot().__aenter__())
    await asyncio.sleep(0)
    w.cancel()
    with pytest.raises(asyncio.CancelledError):
        await w
    assert ac.waiting == 0
    release.set()
    await asyncio.gather(*tasks)
    assert ac.in_flight == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        AdaptiveConcurrency(initial=1, minimum=0, maximum=1)
    with pytest.raises(ValueError):
        AdaptiveConcurrency(initial=1, minimum=1, maximum=2, decrease=1.5)
