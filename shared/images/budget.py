"""A byte budget for one process: how much image memory may be decoded at once, shared by all jobs.

An asyncio semaphore counted in bytes. Reservations are all-or-nothing and served first come,
first served (a big image is not starved by a stream of small ones); one larger than the whole
budget is refused at once with ``ImageTooLargeError`` rather than waiting forever.

>>> import asyncio
>>> async def demo() -> tuple[int, int]:
...     budget = ByteBudget(100)
...     async with budget.reserve(60):
...         during = budget.available
...     return during, budget.available
>>> asyncio.run(demo())
(40, 100)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.errors import ImageTooLargeError


class ByteBudget:
    """``reserve(n)`` waits until ``n`` bytes are free; create it on the loop that uses it."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a byte budget needs a positive capacity")
        self.capacity = capacity
        self.available = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def reserve(self, n: int) -> AsyncIterator[None]:
        await self.acquire(n)
        try:
            yield
        finally:
            self.release(n)

    async def acquire(self, n: int) -> None:
        if n > self.capacity:
            raise ImageTooLargeError(
                f"the image needs ~{n / 2**20:.0f} MiB to decode, more than this worker's whole "
                f"decode budget ({self.capacity / 2**20:.0f} MiB, IMGQ_DECODE_BUDGET_BYTES)"
            )
        n = max(n, 0)
        if not self._waiters and n <= self.available:
            self.available -= n
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._wake()  # we may have been the head blocking smaller requests
            raise

    def release(self, n: int) -> None:
        self.available = min(self.capacity, self.available + max(n, 0))
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            n, fut = self._waiters.popleft()
            if fut.done():
                continue
            self.available -= n
            fut.set_result(None)


class ImageLimits:
    """One worker process's image limits: the decode budget and the number of loads at once.

    Built on the worker's loop at first use, shared by every job of the process.
    """

    def __init__(self, *, decode_budget_bytes: int, loads: int, loads_per_job: int) -> None:
        self.budget = ByteBudget(decode_budget_bytes)
        self.loads = asyncio.Semaphore(max(1, loads))
        self.loads_per_job = max(1, loads_per_job)
