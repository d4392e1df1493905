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
from shared.storage.redis_store import RedisJobEvents
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


async def commit_once(
    deps: WorkerDeps, lease: Lease, result: Result, *, finish: bool = False
) -> int:
    """One fenced write of ``result``: 1 (as holder), 2 (success without the lease), 0 (refused).

    ``finish``: the final write also publishes the job's event and gives the lease back, in the
    same script (with the Redis event channel; otherwise the event is published after it).
    """
    store = deps.results
    payload = await dump_json(result, deps)
    event = None
    if finish and isinstance(deps.events, RedisJobEvents) and isinstance(store, RedisResultStore):
        event = (deps.events.channel, deps.events.message(result.job_id, result.status))
    if isinstance(store, RedisResultStore):
        code = await deps.locks.commit(
            lease,
            result.status,
            result_key=store.key(result.job_id),
            result_json=payload,
            result_ttl=store.ttl_seconds,
            event=event,
            release=finish,
        )
    else:  # the object store cannot join the script: the lease is released by the caller
        code = await deps.locks.commit(lease, result.status, dry_run=True)
        if code != 0:
            await store.put(result, force=True)
            code = await deps.locks.commit(lease, result.status)
    if finish and event is None:
        await deps.events.publish(result.job_id, result.status)
    return code


async def write_running(deps: WorkerDeps, lease: Lease, result: Result) -> None:
    """Right before a paid call: prove the lease and record the attempt, as one step on Redis."""
    if await commit_once(deps, lease, result) != 1:
        lease.lost = True
        raise LeaseLostError(f"job {lease.job_id}: lease lost before the call")


async def write_final(
    deps: WorkerDeps, lease: Lease, result: Result, *, finish: bool = False
) -> int:
    """Store a terminal result, retrying while Redis/S3 are unavailable; the commit code.

    ``finish``: also publish the job's event and give the lease back (one script with the
    Redis stores: one round trip instead of three).
    """
    deadline = time.monotonic() + deps.settings.result_write_retry_seconds
    delay = FIRST_RETRY_SECONDS
    while True:
        try:
            code = await commit_once(deps, lease, result, finish=finish)
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
