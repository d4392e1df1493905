"""Any number of waiters over ONE event subscription per process.

Each ``?wait`` used to open its own pub/sub connection, so 400 concurrent waits meant 400 Redis
connections ("Too many connections"). The hub holds one subscription and fans the events out to
waiting futures; the results themselves are read through the store's (bounded) pool, one read per
finished job however many wait on it. Events are best effort, so the hub also re-reads every
waited job in batches each ``recheck_seconds`` and at once after (re)subscribing: a terminal
event lost while the subscription was down is never missed, only late.

>>> hub = WaitHub(results, events)                          # doctest: +SKIP
>>> result = await hub.wait("job-1", timeout=20)            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from shared.jobs import TERMINAL_STATUSES, Result
from shared.loop_thread import cancel_task
from shared.storage.base import JobEvents, ResultStore

log = logging.getLogger(__name__)
RECHECK_SECONDS: Final = 1.0
_BATCH: Final = 500
_RECONNECT_MIN: Final = 0.2
_RECONNECT_MAX: Final = 5.0


class UnreadableResultError(ValueError):
    """The stored result of a job cannot be parsed (it will not change by waiting)."""


class WaitHub:
    """Fan one subscription out to waiters; start it on the loop that uses it (lazily)."""

    def __init__(
        self, results: ResultStore, events: JobEvents, *, recheck_seconds: float = RECHECK_SECONDS
    ) -> None:
        self._results = results
        self._events = events
        self._recheck = recheck_seconds
        self._waiters: dict[str, set[asyncio.Future[Result]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.subscriptions = 0  # how many times the subscription was (re)opened

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def wait(self, job_id: str, timeout: float) -> Result | None:
        """The job's terminal result, or None when ``timeout`` passes first.

        Raises ``UnreadableResultError`` when the stored result cannot be parsed and
        ``StorageUnavailableError`` when the store cannot be read at the start.
        """
        self._start()
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(fut)
        try:
            # Registered before this read: an event arriving in between is not lost.
            current = await read_result(self._results, job_id)
            if current is not None and current.done:
                return current
            try:
                async with asyncio.timeout(timeout):
                    return await fut
            except TimeoutError:
                return None
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._waiters[job_id]

    async def aclose(self) -> None:
        self._closed = True
        await cancel_task(self._task)
        self._task = None

    # -- the one subscription --------------------------------------------------------------------
    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="imgq-wait-hub")

    async def _run(self) -> None:
        delay = _RECONNECT_MIN
        while not self._closed:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wait hub: subscription lost (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
                continue
            delay = _RECONNECT_MIN

    async def _listen(self) -> None:
        sub = self._events.subscribe()
        self.subscriptions += 1
        last_check = -1.0  # the first tick after (re)subscribing re-reads every waited job
        loop = asyncio.get_running_loop()
        try:
            async for job_id, status in sub:
                if job_id and status in TERMINAL_STATUSES and job_id in self._waiters:
                    await self._resolve([job_id])
                now = loop.time()
                if self._waiters and (last_check < 0 or now - last_check >= self._recheck):
                    last_check = now
                    await self._resolve(list(self._waiters))
        finally:
            await sub.aclose()  # type: ignore[attr-defined]

    async def _resolve(self, job_ids: list[str]) -> None:
        for i in range(0, len(job_ids), _BATCH):
            batch = job_ids[i : i + _BATCH]
            try:
                found = await self._results.get_many(batch)
            except ValueError:  # one unreadable record fails the batch: read them one by one
                for job_id in batch:
                    try:
                        one = await read_result(self._results, job_id)
                    except UnreadableResultError as exc:
                        self._settle(job_id, error=exc)
                        continue
                    if one is not None and one.done:
                        self._settle(job_id, result=one)
                continue
            for job_id, r in zip(batch, found, strict=True):
                if r is not None and r.done:
                    self._settle(job_id, result=r)

    def _settle(
        self, job_id: str, *, result: Result | None = None, error: Exception | None = None
    ) -> None:
        for fut in self._waiters.pop(job_id, set()):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            elif result is not None:
                fut.set_result(result)


async def read_result(results: ResultStore, job_id: str) -> Result | None:
    """``results.get`` with a parse failure as ``UnreadableResultError``."""
    try:
        return await results.get(job_id)
    except ValueError as exc:  # pydantic's ValidationError: corrupt, or nested past its limits
        raise UnreadableResultError(
            f"the stored result of job {job_id!r} cannot be read ({type(exc).__name__})"
        ) from None
