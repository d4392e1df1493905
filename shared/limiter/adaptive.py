"""Local in-flight cap that follows capacity: AIMD with slow start and a latency guard.

* success while the cap is the bottleneck (every slot busy or callers waiting), latency within
  ``latency_tolerance`` x the baseline and no wait for tokens: grow (+1 per success in slow start,
  i.e. doubling per round trip; +1 per round trip after the first overload);
* 429 or timeout (``on_overload``): multiply by ``decrease`` (at most once per ``backoff_s``, so a
  burst of 429s from one episode counts once) and leave slow start;
* latency above the tolerance: shrink by 10 % (same pacing);
* ``maximum`` is the hard local cap that protects the process; ``minimum`` keeps work moving.

Waiting callers are served interactive first; bulk gets a slot after ``burst`` interactive ones.

>>> ac = AdaptiveConcurrency(initial=4, minimum=1, maximum=64)
>>> ac.on_overload(); ac.limit
2
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from shared.limiter.base import Priority
from shared.limiter.fair import FairLine


class AdaptiveConcurrency:
    def __init__(
        self,
        *,
        initial: int,
        minimum: int,
        maximum: int,
        decrease: float = 0.5,
        latency_tolerance: float = 2.0,
        backoff_s: float = 1.0,
        capacity_wait_s: float = 0.05,
        burst: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be in (0, 1)")
        self.minimum, self.maximum = minimum, maximum
        self._limit = float(min(max(initial, minimum), maximum))
        self.decrease = decrease
        self.latency_tolerance = latency_tolerance
        self.backoff_s = backoff_s
        self.capacity_wait_s = capacity_wait_s
        self.slow_start = True
        self.baseline_s: float | None = None
        self.in_flight = 0
        self._line: FairLine[asyncio.Future[None]] = FairLine(burst=burst)
        self._clock = clock
        self._last_cut = -float("inf")

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def waiting(self) -> int:
        return len(self._line)

    # -- slots ----------------------------------------------------------------------------------
    @asynccontextmanager
    async def slot(self, priority: Priority = "interactive") -> AsyncIterator[None]:
        """Hold one in-flight slot for the body (waits, without blocking the loop, if none)."""
        await self._enter(priority)
        try:
            yield
        finally:
            self._exit()

    async def _enter(self, priority: Priority) -> None:
        if self.in_flight < self.limit and not len(self._line):
            self.in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.push(priority, fut)
        try:
            await fut  # the slot is handed over with in_flight already counted
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._exit()
            else:
                self._line.remove(fut)
            raise

    def _exit(self) -> None:
        self.in_flight -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        while len(self._line) and self.in_flight < self.limit:
            fut = self._line.pop()
            if fut.done():
                continue
            self.in_flight += 1
            fut.set_result(None)

    # -- feedback -------------------------------------------------------------------------------
    def on_success(self, latency_s: float, *, capacity_wait_s: float = 0.0) -> None:
        """A call succeeded in ``latency_s`` (the API call only) after ``capacity_wait_s`` spent
        waiting for the limiter: growing is useless while tokens, not slots, are the bottleneck."""
        if latency_s < 0:
            return
        base = self.baseline_s
        # The baseline follows drops at once and rises slowly (a new normal, not one slow call).
        base = latency_s if base is None else min(latency_s, base + 0.02 * (latency_s - base))
        self.baseline_s = base
        if latency_s > self.latency_tolerance * max(base, 1e-3):
            self._cut(0.9)
            return
        busy = len(self._line) > 0 or self.in_flight >= self.limit
        if not busy or capacity_wait_s > self.capacity_wait_s:
            return
        step = 1.0 if self.slow_start else 1.0 / max(self._limit, 1.0)
        self._limit = min(float(self.maximum), self._limit + step)
        self._dispatch()

    def on_overload(self) -> None:
        """A 429 or a timeout: back off multiplicatively."""
        self.slow_start = False
        self._cut(self.decrease)

    def _cut(self, factor: float) -> None:
        now = self._clock()
        if now - self._last_cut < self.backoff_s:
            return
        self._last_cut = now
        self._limit = max(float(self.minimum), self._limit * factor)
