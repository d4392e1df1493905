"""The fleet-wide queue, with several limiters (one per process in production) on one Redis and a
hand-driven clock: interactive before bulk, then arrival order across processes, bulk not
starved, tenants by weight, waiters past their deadline dropped."""

from __future__ import annotations

import asyncio
from collections import Counter

from shared.limiter import LimitKey, LimitsConfig, ModelLimits, RedisLimiter, Reservation
from tests.limiter.helpers import MODEL, Clock, make

KEY = LimitKey(MODEL, "0123456789abcdef")


def cfg(**kw: object) -> LimitsConfig:
    return LimitsConfig(
        configured={MODEL: ModelLimits(6000, 100_000)},
        margin_s=0,
        **{"interactive_reserve": 0.0, **kw},
    )  # type: ignore[arg-type]


async def _queue(
    lims: list[RedisLimiter], plan: list[tuple[int, str, str]]
) -> list[asyncio.Task[Reservation]]:
    """Waiters in this exact arrival order: (limiter index, priority, tenant) each."""
    tasks = []
    for i, prio, tenant in plan:
        tasks.append(asyncio.create_task(
            lims[i].acquire(KEY, 100, priority=prio, tenant=tenant or None, timeout=30)  # type: ignore[arg-type]
        ))  # fmt: skip
        await asyncio.sleep(0.06)  # enqueued (directly or by the pump) before the next arrives
    return tasks


async def _step(clock: Clock, tasks: list[asyncio.Task[Reservation]], seconds: float) -> None:
    """Refill ``seconds`` of the bucket (100 tokens/s), then let the pumps hand it out."""
    done = sum(t.done() for t in tasks)
    clock.offset += seconds
    for _ in range(40):
        await asyncio.sleep(0.05)
        if sum(t.done() for t in tasks) >= min(len(tasks), done + round(seconds)):
            return


async def test_interactive_first_then_arrival_order_across_processes(redis_url: str) -> None:
    clock = Clock()
    a, b, c = (make(redis_url, cfg(), clock=clock) for _ in range(3))
    await a.acquire(KEY, 6000)  # empty bucket: everyone below waits
    plan = [(0, "bulk", ""), (1, "bulk", ""), (2, "bulk", ""), (1, "interactive", ""),
            (0, "bulk", ""), (2, "interactive", ""), (0, "interactive", "")]  # fmt: skip
    tasks = await _queue([a, b, c], plan)
    snap = await a.snapshot(KEY)
    assert (snap.waiting_interactive, snap.waiting_bulk, snap.processes) == (3, 4, 3)
    for _ in plan:
        await _step(clock, tasks, 1.0)  # one grant per step: the grant time gives the order
    got = [t.result() for t in tasks]
    order = sorted(range(len(plan)), key=lambda i: got[i].granted_at_ms)
    assert order == [3, 5, 6, 0, 1, 2, 4]  # the fleet's oldest interactive first, then bulk


async def test_bulk_is_not_starved_by_a_stream_of_interactive(redis_url: str) -> None:
    clock = Clock()
    lim = make(redis_url, cfg(interactive_burst=2), clock=clock)
    await lim.acquire(KEY, 6000)
    plan = [(0, "bulk", "")] * 2 + [(0, "interactive", "")] * 5
    tasks = await _queue([lim], plan)
    for _ in plan:
        await _step(clock, tasks, 1.0)
    got = [t.result() for t in tasks]
    order = [plan[i][1][0] for i in sorted(range(len(plan)), key=lambda i: got[i].granted_at_ms)]
    assert "".join(order) == "iibiibi"


async def test_backlogged_tenants_share_by_weight(redis_url: str) -> None:
    clock = Clock()
    weights = {"a": 3.0, "b": 1.0}
    # (no deadlines, alive 100 s: the clock jumps 40 s below, which would drop the waiters)
    c = cfg(tenant_weights=weights, waiter_alive_s=100.0)
    x, y = (make(redis_url, c, clock=clock) for _ in range(2))
    await x.acquire(KEY, 6000)
    # tenant b queued all its work first: weights, not arrival, decide between tenants
    tasks = [asyncio.create_task(y.acquire(KEY, 100, tenant="b")) for _ in range(40)]
    await asyncio.sleep(0.2)
    tasks += [asyncio.create_task(x.acquire(KEY, 100, tenant="a")) for _ in range(40)]
    await asyncio.sleep(0.2)
    clock.offset += 40.0  # 4000 tokens: 40 grants in one batch
    for _ in range(40):
        await asyncio.sleep(0.05)
        if sum(t.done() for t in tasks) >= 40:
            break
    shares = Counter(t.result().tenant for t in tasks if t.done())
    assert sum(shares.values()) == 40
    assert 28 <= shares["a"] <= 32, shares  # 3:1 -> 30 / 10
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_waiter_past_its_deadline_is_dropped_not_granted(redis_url: str) -> None:
    clock = Clock()
    a, b = make(redis_url, cfg(), clock=clock), make(redis_url, cfg(), clock=clock)
    await a.acquire(KEY, 6000)
    stuck = asyncio.create_task(a.acquire(KEY, 3000, timeout=1.0))
    await asyncio.sleep(0.1)
    a._lines[KEY]._task.cancel()  # type: ignore[union-attr]  # its process stops calling Redis
    mine = asyncio.create_task(b.acquire(KEY, 100, timeout=30))
    await asyncio.sleep(0.1)
    clock.offset += 5.0  # the stuck waiter's deadline (1 s + 1 s slack) has passed
    got = await asyncio.wait_for(mine, 5)
    assert got.tokens == 100
    snap = await b.snapshot(KEY)
    assert snap.waiting == 0 and snap.in_flight == 2
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)


async def test_bulk_leaves_a_reserve_that_interactive_gets_at_once(redis_url: str) -> None:
    clock = Clock()
    lim = make(redis_url, cfg(interactive_reserve=0.05), clock=clock)  # 300 of 6000 kept
    await lim.acquire(KEY, 5600, priority="bulk")
    bulk = asyncio.create_task(lim.acquire(KEY, 200, priority="bulk"))  # would leave 200 < 300
    await asyncio.sleep(0.3)
    assert not bulk.done()
    r = await asyncio.wait_for(lim.acquire(KEY, 350, timeout=5), 1)  # interactive: at once
    assert r.priority == "interactive"
    clock.offset += 4.0  # 50 left + 400 refilled: the bulk one leaves 250 < 300, still waits
    await asyncio.sleep(0.4)
    assert not bulk.done()
    clock.offset += 1.0  # 550: it leaves 350 >= 300
    got = await asyncio.wait_for(bulk, 2)
    assert got.tokens == 200 and (await lim.snapshot(KEY)).tokens_level == 350
