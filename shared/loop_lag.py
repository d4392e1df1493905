"""Event-loop lag: how late ``asyncio.sleep`` wakes up. CPU work on the loop shows up here.

A worker's one event loop runs every call, lease heartbeat and result write; anything that
blocks it (a big prompt tokenised inline, a huge JSON parsed on the loop) delays them all, and
a long enough stall lets leases lapse. The monitor sleeps ``interval`` seconds in a loop and
records, each time, how much later than asked it woke (``imgq_event_loop_lag_seconds``).

>>> import asyncio
>>> async def demo() -> float:
...     lags: list[float] = []
...     monitor = LoopLagMonitor(lags.append, interval=0.01)
...     monitor.start()
...     await asyncio.sleep(0.05)
...     await monitor.stop()
...     return min(lags)
>>> 0.0 <= asyncio.run(demo()) < 1.0
True
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from shared.loop_thread import cancel_task

INTERVAL_SECONDS = 0.25


class LoopLagMonitor:
    """A small task on the loop; ``observe(lag_seconds)`` is called after every sleep."""

    def __init__(
        self, observe: Callable[[float], None], *, interval: float = INTERVAL_SECONDS
    ) -> None:
        self._observe = observe
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.last_lag = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="imgq-loop-lag")

    async def _run(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self._interval)
            self.last_lag = max(0.0, time.perf_counter() - asked - self._interval)
            self._observe(self.last_lag)

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
