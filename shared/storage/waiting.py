"""Wait for jobs to finish: pub/sub events for speed, periodic re-checks so nothing is missed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable

from shared.errors import StorageUnavailableError
from shared.jobs import TERMINAL_STATUSES, Result
from shared.storage.base import JobEvents, ResultStore

RECHECK_SECONDS = 1.0
_BATCH = 1000


async def _finished(store: ResultStore, ids: list[str]) -> list[Result]:
    done: list[Result] = []
    for i in range(0, len(ids), _BATCH):
        for r in await store.get_many(ids[i : i + _BATCH]):
            if r is not None and r.done:
                done.append(r)
    return done


async def iter_results(
    store: ResultStore,
    events: JobEvents,
    job_ids: Iterable[str],
    *,
    timeout: float | None = None,
) -> AsyncIterator[Result]:
    """Yield each job's terminal Result as it finishes; TimeoutError when ``timeout`` passes."""
    pending = dict.fromkeys(job_ids)
    deadline = None if timeout is None else time.monotonic() + timeout
    for r in await _finished(store, list(pending)):
        pending.pop(r.job_id, None)
        yield r
    if not pending:
        return
    sub = events.subscribe()
    last_check = 0.0  # the first tick after subscribing re-checks everything
    try:
        async for job_id, status in sub:
            if job_id in pending and status in TERMINAL_STATUSES:
                try:
                    finished = await store.get(job_id)
                except StorageUnavailableError:
                    finished = None  # the periodic re-check finds it once the store is back
                if finished is not None and finished.done:
                    pending.pop(job_id, None)
                    yield finished
            now = time.monotonic()
            if now - last_check >= RECHECK_SECONDS:
                last_check = now
                try:
                    done = await _finished(store, list(pending))
                except StorageUnavailableError:
                    done = []  # the store is restarting: keep waiting (the deadline holds)
                for r in done:
                    pending.pop(r.job_id, None)
                    yield r
            if not pending:
                return
            if deadline is not None and now > deadline:
                raise TimeoutError(f"{len(pending)} job(s) still unfinished after {timeout}s")
    finally:
        await sub.aclose()  # type: ignore[attr-defined]


async def wait_result(
    store: ResultStore, events: JobEvents, job_id: str, *, timeout: float | None = None
) -> Result:
    """The terminal Result of one job."""
    async for r in iter_results(store, events, [job_id], timeout=timeout):
        return r
    raise TimeoutError(f"job {job_id} did not finish")  # pragma: no cover - iter raises first
