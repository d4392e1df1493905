"""One persistent asyncio event loop in a daemon thread, for sync code that drives async code.

Celery's threads pool and the synchronous producer client both hand coroutines to it with
``run()``; the loop is created lazily (after any fork) and lives until ``stop()``. Never
``asyncio.run`` per call: clients bound to a loop must keep that loop.

>>> lt = LoopThread(name="doc")
>>> async def add(a, b):
...     return a + b
>>> lt.run(add(1, 2))
3
>>> lt.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "imgq-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, started on first use (thread-safe)."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                new_loop = asyncio.new_event_loop()

                def serve() -> None:
                    asyncio.set_event_loop(new_loop)
                    new_loop.call_soon(ready.set)
                    new_loop.run_forever()

                self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = new_loop
            return self._loop

    @property
    def started(self) -> bool:
        return self._loop is not None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait; on timeout the coroutine is cancelled."""
        fut = self.submit(coro)
        try:
            return fut.result(timeout=timeout)
        except TimeoutError:
            # Since 3.11 concurrent.futures.TimeoutError *is* TimeoutError: a coroutine that itself
            # raised TimeoutError is done, and its own error goes up unchanged.
            if fut.done():
                raise
            fut.cancel()
            raise TimeoutError(f"coroutine did not finish within {timeout}s") from None

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate ``agen`` (made for this loop) from sync code; an async generator is closed on exit.

        >>> lt = LoopThread(name="doc")
        >>> async def count(n):
        ...     for i in range(n):
        ...         yield i
        >>> list(lt.iterate(count(3)))
        [0, 1, 2]
        >>> lt.stop()
        """

        async def step() -> T:
            return await agen.__anext__()

        try:
            while True:
                try:
                    yield self.run(step())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                self.run(aclose())

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what is still running, stop the loop and join the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop, self._thread = None, None
        if loop is None or thread is None:
            return

        async def _cancel_rest() -> None:
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):  # best effort: stop the loop whatever happens
            asyncio.run_coroutine_threadsafe(_cancel_rest(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


async def cancel_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task (if any) and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
