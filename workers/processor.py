"""Process one job: take its lease, run it (workers/analyze.py, workers/generate.py), record.

Every failure of the *job* ends as a Result with one error code from shared/errors.py. What is
not the job's failure is raised to the task, which hands the message back to the broker:
CapacityWaitTimeoutError (no capacity yet: not counted), LeaseLostError (another delivery owns
the job now) and DeliveryError (storage down, a corrupt record, a bug outside the call path:
counted; after IMGQ_MAX_DELIVERIES the job fails as ``poison_job`` and is dead-lettered).
"""

from __future__ import annotations

import asyncio
import logging
import time

from shared import dlq, errors
from shared.budget import settle_job
from shared.jobs import ErrorInfo, Job, Result
from workers import batch_route, webhooks
from workers.analyze import run_analyze
from workers.call_step import StorageDown
from workers.commit import STORAGE_ERRORS, write_final
from workers.deps import WorkerDeps
from workers.generate import run_generation
from workers.locks import Lease, LeaseLostError

log = logging.getLogger(__name__)
LOCK_POLL_SECONDS = 1.0


class DeliveryError(Exception):
    """This delivery could not run the job (not the job's fault, or not yet known to be)."""

    def __init__(self, message: str, *, deliveries: int) -> None:
        super().__init__(message)
        self.deliveries = deliveries


async def process_job(job: Job, deps: WorkerDeps) -> Result:
    """Run ``job`` to a terminal Result (idempotent: a finished job is returned as it is)."""
    if batch_route.wants_batch(job, auto=deps.settings.batch_auto):
        return await batch_route.enqueue_for_batch(job, deps)  # the batcher answers it (issue 14)
    lease = await _take_lease(job, deps)
    if isinstance(lease, Result):
        return lease
    try:
        return await _process_leased(job, lease, deps)
    except (errors.CapacityWaitTimeoutError, LeaseLostError):
        raise
    except (*STORAGE_ERRORS, StorageDown) as exc:
        # Redis/S3 down before the call: not the job's fault, so not counted against it.
        await deps.locks.release(lease, uncount=True)
        raise DeliveryError(f"storage unavailable: {exc}", deliveries=1) from exc
    except Exception as exc:
        # A record that does not parse, a bug outside the call path: the message goes back to
        # the broker (never acked-and-lost) and the delivery counts; the last one dead-letters.
        log.warning("job %s: delivery %d failed: %r", job.job_id, lease.deliveries, exc)
        if lease.deliveries >= deps.settings.max_deliveries:
            return await _finish_dead(job, lease, _poison(job, lease, deps), deps)
        raise DeliveryError(f"{type(exc).__name__}: {exc}", deliveries=lease.deliveries) from exc
    finally:
        await deps.locks.release(lease)


def _poison(job: Job, lease: Lease, deps: WorkerDeps) -> errors.ImgqError:
    return errors.PoisonJobError(
        f"processing the job failed on {lease.deliveries} deliveries "
        f"(IMGQ_MAX_DELIVERIES={deps.settings.max_deliveries}); see `imgq dlq show {job.job_id}`"
    )


async def _take_lease(job: Job, deps: WorkerDeps) -> Lease | Result:
    """Our lease, or the job's terminal Result when it is already finished."""
    while True:
        got = await deps.locks.acquire(job.job_id)
        if isinstance(got, Lease):
            return got
        if got == "done":
            current = await deps.results.get(job.job_id)
            if current is not None and current.done:
                return current
            raise DeliveryError(f"job {job.job_id}: state finished, record not yet", deliveries=0)
        # Another live worker holds it (a redelivered copy): wait for it, or for its lease.
        await asyncio.sleep(LOCK_POLL_SECONDS)


async def _process_leased(job: Job, lease: Lease, deps: WorkerDeps) -> Result:
    if lease.deliveries > deps.settings.max_deliveries:  # the last one could not record it
        return await _finish_dead(job, lease, _poison(job, lease, deps), deps)
    if lease.expires_at is not None and lease.now > lease.expires_at:
        late = errors.JobExpiredError("the job was not finished by its deadline (expires_at)")
        return await _finish_dead(job, lease, late, deps)
    current = await deps.results.get(job.job_id)
    if current is not None and current.done:
        return current
    result = current or Result(job_id=job.job_id)
    result.status = "running"
    result.model = job.model
    result.metadata = job.metadata
    result.sources = [s.source for s in job.images]
    result.timings.queued_at = job.submitted_at
    result.timings.started_at = result.timings.started_at or time.time()
    deps.metrics.queue_wait_seconds.labels(priority=job.priority).observe(
        max(0.0, result.timings.started_at - job.submitted_at)
    )
    try:
        result = await _run(job, result, lease, deps)
    except errors.CapacityWaitTimeoutError:
        await deps.locks.release(lease, uncount=True)  # waiting is not the job's fault
        raise
    except (LeaseLostError, StorageDown, *STORAGE_ERRORS):
        raise  # not the job's failure: the delivery is handed back (see process_job)
    except errors.ImgqError as exc:
        result = _failed(result, exc)
    except Exception as exc:  # a bug must fail the job, never the worker
        log.exception("job %s: unexpected error", job.job_id)
        result = _failed(result, errors.ImgqError(f"internal error: {type(exc).__name__}"))
    result.timings.finished_at = time.time()
    await write_final(deps, lease, result, finish=True)  # the event and the release too
    await settle_job(deps.redis, job, result)  # issue 11: the tenant's budget, with the bill
    await webhooks.schedule(deps, job, result)  # issue 11: the job's callback_url, if any
    _record_finish(job, result, deps)
    return result


async def _finish_dead(job: Job, lease: Lease, exc: errors.ImgqError, deps: WorkerDeps) -> Result:
    """Fail the job with ``exc`` and put it in the dead-letter set (no API call)."""
    try:
        current = await deps.results.get(job.job_id)
    except Exception:  # the record itself may be what crashes every delivery
        current = None
    result = current if current is not None else Result(job_id=job.job_id)
    if result.done:
        return result
    result = _failed(result, exc)
    result.model = job.model
    result.timings.finished_at = time.time()
    await write_final(deps, lease, result, finish=True)  # the event and the release too
    await dlq.add(deps.redis, job.job_id)
    await settle_job(deps.redis, job, result)  # issue 11: no call paid: the estimate back
    await webhooks.schedule(deps, job, result)
    deps.metrics.job_failures_total.labels(model=job.model, code=exc.code).inc()
    log.warning("job %s: %s, dead-lettered", job.job_id, exc.code)
    return result


def _failed(result: Result, exc: errors.ImgqError) -> Result:
    result.status = "failed"
    result.error = ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable)
    return result


def _record_finish(job: Job, result: Result, deps: WorkerDeps) -> None:
    m = deps.metrics
    m.jobs_total.labels(model=job.model, api=job.api, status=result.status).inc()
    if result.error is not None:
        m.job_failures_total.labels(model=job.model, code=result.error.code).inc()
    if result.timings.finished_at is not None:
        m.job_duration_seconds.labels(model=job.model, priority=job.priority).observe(
            max(0.0, result.timings.finished_at - job.submitted_at)
        )


async def _run(job: Job, result: Result, lease: Lease, deps: WorkerDeps) -> Result:
    if job.kind != "analyze":  # image generation and edits (issue 15): their own call path
        return await run_generation(job, result, lease, deps)
    return await run_analyze(job, result, lease, deps)
