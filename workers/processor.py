"""Process one job: take its lease, prepare its images, dedup, wait for capacity, call, record.

Every failure of the *job* ends as a Result with one error code from shared/errors.py. What is
not the job's failure is raised to the task, which hands the message back to the broker:
CapacityWaitTimeoutError (no capacity yet: not counted), LeaseLostError (another delivery owns
the job now) and DeliveryError (storage down, a corrupt record, a bug outside the call path:
counted; after IMGQ_MAX_DELIVERIES the job fails as ``poison_job`` and is dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from shared import dlq, errors
from shared.budget import settle_job
from shared.catalogue import canonical_model, default_catalogue
from shared.images import PreparedImage
from shared.jobs import ErrorInfo, Job, Result
from shared.limiter import LimitKey, parse_ratelimit_headers
from shared.prompt_guard import check_prompt
from shared.storage import wait_result
from shared.text_tokens import prompt_tokens
from workers import batch_route, dedup, webhooks
from workers.call_step import (
    Ask,
    Spend,
    StorageDown,
    call_step,
    fenced_before_call,
    on_call_error,
)
from workers.commit import STORAGE_ERRORS, write_final
from workers.deps import WorkerDeps
from workers.generate import run_generation
from workers.images_step import prepare_job_images
from workers.locks import Lease, LeaseLostError
from workers.openai_call import ApiOutcome, call_openai, parse_structured_output
from workers.stream_call import stream_job_call

log = logging.getLogger(__name__)
LOCK_POLL_SECONDS = 1.0
INLINE_PROMPT_CHARS = 2048  # longer prompts are checked and tokenised on the executor
T = TypeVar("T")


class DeliveryError(Exception):
    """This delivery could not run the job (not the job's fault, or not yet known to be)."""

    def __init__(self, message: str, *, deliveries: int) -> None:
        super().__init__(message)
        self.deliveries = deliveries


async def off_loop(deps: WorkerDeps, fn: Callable[..., T], *args: Any) -> T:
    """Run CPU work (tokenising, prompt checks, schema validation) on the worker's pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(deps.executor, functools.partial(fn, *args))


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
    # A short prompt is checked and counted (its count is cached) faster than a thread hop costs.
    short = len(job.prompt) <= INLINE_PROMPT_CHARS
    if short:
        check_prompt(job.prompt)
    else:
        await off_loop(deps, check_prompt, job.prompt)
    images = await prepare_job_images(job, deps)
    tokens = [p.tokens for p in images]
    if short:
        estimate = prompt_tokens([job.prompt], tokens)
    else:
        estimate = await off_loop(deps, prompt_tokens, [job.prompt], tokens)
    result.usage.image_tokens = sum(tokens)
    result.usage.estimated_input_tokens = estimate
    if not job.dedup:
        return await _call_with_retries(job, result, lease, images, estimate, deps)
    key = dedup.dedup_key(job, images)
    ttl = deps.settings.result_ttl_seconds
    leader = await dedup.claim(deps.redis, key, job.job_id, ttl)
    if leader is not None:
        copied = await _follow(leader, result, deps)
        if copied is not None:
            return copied
        await dedup.take_over(deps.redis, key, job.job_id, ttl)
    try:
        return await _call_with_retries(job, result, lease, images, estimate, deps)
    except errors.ImgqError:
        with contextlib.suppress(*STORAGE_ERRORS):  # it lapses with its TTL otherwise
            await dedup.release(deps.redis, key, job.job_id)
        raise


async def _follow(leader_id: str, result: Result, deps: WorkerDeps) -> Result | None:
    """The leader's answer copied into ``result``, or None when the leader did not succeed."""
    leader = await deps.results.get(leader_id)
    kind = "finished"
    if leader is not None and not leader.done:
        kind = "in_flight"
        budget = deps.settings.request_timeout_seconds * deps.settings.max_attempts
        try:
            leader = await wait_result(deps.results, deps.events, leader_id, timeout=budget)
        except TimeoutError:
            return None
    if leader is None or leader.status != "succeeded":
        return None
    deps.metrics.dedup_hits_total.labels(kind=kind).inc()
    return dedup.copy_result(leader, result)


async def _call_with_retries(
    job: Job,
    result: Result,
    lease: Lease,
    images: Sequence[PreparedImage],
    estimate: int,
    deps: WorkerDeps,
) -> Result:
    m = deps.metrics
    key = LimitKey(model=canonical_model(job.model), account=deps.account)
    ask = Ask(key, estimate + job.max_output_tokens, job.max_output_tokens, job.model)
    parts = [(p.data_url(), p.detail) for p in images]  # detail may drop to low for a budget

    seen_headers: list[Mapping[str, str] | None] = [None]

    async def observe(headers: Mapping[str, str]) -> None:
        # The limiter reads them with the settle or release (one round trip, not two).
        seen_headers[0] = headers
        seen = parse_ratelimit_headers(headers)
        m.set_ratelimit_remaining(
            job.model, tokens=seen.remaining_tokens, requests=seen.remaining_requests
        )
        if seen.limit_tokens is not None:
            m.limit_tokens_per_minute.labels(model=job.model).set(seen.limit_tokens)
        if seen.limit_requests is not None:
            m.limit_requests_per_minute.labels(model=job.model).set(seen.limit_requests)

    def _call() -> Awaitable[ApiOutcome]:
        if job.stream:  # issue 11: the same outcome, its text published as it comes
            return stream_job_call(deps, job, parts, result.attempts, observe)
        return call_openai(
            deps.client,
            api=job.api,
            model=job.model,
            prompt=job.prompt,
            images=parts,
            max_output_tokens=job.max_output_tokens,
            json_schema=job.json_schema,
            timeout=deps.settings.request_timeout_seconds,
            on_headers=observe,
        )

    def call() -> Awaitable[ApiOutcome]:
        seen_headers[0] = None
        return _call()

    def spend(o: ApiOutcome) -> Spend:
        return Spend(o.prompt_tokens, o.completion_tokens, o.latency_seconds, o.headers)

    before_call = fenced_before_call(deps, lease, result)
    while True:
        try:
            outcome = await call_step(
                job, deps, ask, before_call, call, spend, lambda: seen_headers[0]
            )
        except errors.ImgqError as exc:
            await asyncio.sleep(await on_call_error(job, deps, ask, job.api, exc, result.attempts))
            continue
        m.api_requests_total.labels(model=job.model, api=job.api, outcome="ok").inc()
        m.api_latency_seconds.labels(model=job.model, api=job.api).observe(outcome.latency_seconds)
        return await _succeeded(job, result, outcome, deps)


async def _succeeded(job: Job, result: Result, outcome: ApiOutcome, deps: WorkerDeps) -> Result:
    m = deps.metrics
    result.timings.api_seconds += outcome.latency_seconds
    result.usage.input_tokens = outcome.prompt_tokens
    result.usage.output_tokens = outcome.completion_tokens
    result.usage.billed_input_tokens = outcome.prompt_tokens
    result.usage.billed_output_tokens = outcome.completion_tokens
    cost = default_catalogue().cost_usd(job.model, outcome.prompt_tokens, outcome.completion_tokens)
    result.cost_usd = cost  # None: unpriced model (never an error after a paid call)
    result.output_text = outcome.text
    for kind, n in (
        ("input", outcome.prompt_tokens),
        ("output", outcome.completion_tokens),
        ("image", result.usage.image_tokens),
        ("estimated_input", result.usage.estimated_input_tokens),
    ):
        m.tokens_total.labels(model=job.model, kind=kind).inc(n)
    if cost is not None:
        m.cost_usd_total.labels(model=job.model).inc(cost)
    if job.json_schema is not None:
        result.output_json = await off_loop(
            deps, parse_structured_output, outcome.text, job.json_schema
        )
    result.status = "succeeded"
    result.error = None
    return result
