"""LoopThread: one persistent loop in a thread, driven from sync code (client, Celery threads)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from shared.loop_thread import LoopThread


@pytest.fixture
def lt() -> LoopThread:
    loop_thread = LoopThread("test-loop")
    yield loop_thread  # type: ignore[misc]
    loop_thread.stop()


def test_run_returns_and_keeps_one_loop(lt: LoopThread) -> None:
    assert not lt.started

    async def which() -> tuple[asyncio.AbstractEventLoop, str]:
        return asyncio.get_running_loop(), threading.current_thread().name

    loop1, name = lt.run(which())
    loop2, _ = lt.run(which())
    assert lt.started and loop1 is loop2 is lt.loop
    assert name == "test-loop" and name != threading.current_thread().name


def test_exceptions_propagate_unchanged(lt: LoopThread) -> None:
    async def boom() -> None:
        raise KeyError("inner")

    with pytest.raises(KeyError, match="inner"):
        lt.run(boom())


def test_a_timeout_error_raised_by_the_coroutine_keeps_its_message(lt: LoopThread) -> None:
    async def waits() -> None:
        raise TimeoutError("job abc did not finish")

    with pytest.raises(TimeoutError, match="job abc did not finish"):
        lt.run(waits())


def test_timeout_cancels_the_coroutine(lt: LoopThread) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"within 0\.2s"):
        lt.run(forever(), timeout=0.2)
    assert time.monotonic() - started < 2
    assert cancelled.wait(2)
    assert lt.run(asyncio.sleep(0, "still usable")) == "still usable"


def test_many_threads_share_the_loop(lt: LoopThread) -> None:
    async def work(i: int) -> int:
        await asyncio.sleep(0.05)
        return i * 2

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        started = time.monotonic()
        got = list(pool.map(lambda i: lt.run(work(i)), range(64)))
    assert got == [i * 2 for i in range(64)]
    assert time.monotonic() - started < 3  # concurrent on the loop, not one after another


def test_stop_cancels_pending_work_and_a_restart_gives_a_new_loop(lt: LoopThread) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    first_loop = lt.loop
    fut = lt.submit(forever())
    time.sleep(0.1)
    lt.stop()
    assert cancelled.is_set()
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(timeout=2)
    assert not lt.started and first_loop.is_closed()
    assert lt.run(asyncio.sleep(0, 42)) == 42  # restarts lazily
    assert lt.loop is not first_loop
    lt.stop()
    lt.stop()  # idempotent


def test_stop_closes_async_generators(lt: LoopThread) -> None:
    closed = threading.Event()

    async def gen():  # type: ignore[no-untyped-def]
        try:
            yield 1
            yield 2
        finally:
            closed.set()

    agen = gen()

    async def first() -> int:
        # Started on the loop (the loop's asyncgen hooks see it; `agen.__anext__()` called from
        # this thread would not be tracked by the loop).
        return await agen.__anext__()  # type: ignore[no-any-return]

    assert lt.run(first()) == 1
    lt.stop()
    assert closed.is_set()


def test_concurrent_first_use_starts_one_loop() -> None:
    lt = LoopThread("race")
    loops: list[asyncio.AbstractEventLoop] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        loops.append(lt.loop)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(x) for x in loops}) == 1
    assert sum(t.name == "race" for t in threading.enumerate()) == 1
    lt.stop()
