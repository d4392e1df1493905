"""Result writes under the job's lease: fenced, and retried while storage is unavailable.

With the Redis result store the fencing check and the write are one script
(workers/lease_commit.lua). Other stores (S3) cannot join a Redis script: the worker asks the
script first (dry run), writes the object, then records the status; a worker paused between
those steps could still overwrite a newer owner's result object (documented in RELIABILITY.md).

A paid answer is never thrown away because storage hiccupped: ``write_final`` retries with
backoff for ``IMGQ_RESULT_WRITE_RETRY_SECONDS`` while the heartbeat keeps the lease alive.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from shared.errors import StorageUnavailableError
from shared.jobs import Result
from shared.storage import RedisResultStore
from workers.deps import WorkerDeps
from workers.locks import Lease, LeaseLostError

log = logging.getLogger(__name__)
FIRST_RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 2.0  # short: once storage is back, the answer lands within ~2 s
LARGE_JSON_BYTES = 64 * 1024  # larger results are serialised off the event loop
STORAGE_ERRORS = (StorageUnavailableError, RedisError, OSError)


async def dump_json(result: Result, deps: WorkerDeps) -> str:
    """The result's JSON; long answers are serialised on the worker's pool, not the loop.

    Metadata and schemas are size-capped at submit (shared/admission.py), so the answer is
    what can be large.
    """
    if len(result.output_text or "") < LARGE_JSON_BYTES:
        return result.model_dump_json()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(deps.executor, result.model_dump_json)


async def commit_once(deps: WorkerDeps, lease: Lease, result: Result) -> int:
    """One fenced write of ``result``: 1 (as holder), 2 (success without the lease), 0 (refused)."""
    store = deps.results
    payload = await dump_json(result, deps)
    if isinstance(store, RedisResultStore):
        return await deps.locks.commit(
            lease,
            result.status,
            result_key=store.key(result.job_id),
            result_json=payload,
            result_ttl=store.ttl_seconds,
        )
    code = await deps.locks.commit(lease, result.status, dry_run=True)
    if code == 0:
        return 0
    await store.put(result, force=True)
    return await deps.locks.commit(lease, result.status)


async def write_running(deps: WorkerDeps, lease: Lease, result: Result) -> None:
    """Right before a paid call: prove the lease and record the attempt, as one step on Redis."""
    if await commit_once(deps, lease, result) != 1:
        lease.lost = True
        raise LeaseLostError(f"job {lease.job_id}: lease lost before the call")


async def write_final(deps: WorkerDeps, lease: Lease, result: Result) -> int:
    """Store a terminal result, retrying while Redis/S3 are unavailable; the commit code."""
    deadline = time.monotonic() + deps.settings.result_write_retry_seconds
    delay = FIRST_RETRY_SECONDS
    while True:
        try:
            code = await commit_once(deps, lease, result)
        except STORAGE_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "job %s: result write failed (%s); retry in %.1fs", lease.job_id, exc, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
            continue
        if code == 0 and result.status == "succeeded":
            log.warning("job %s: a success was already stored; this answer was paid twice",
                        lease.job_id)  # fmt: skip
        return code
