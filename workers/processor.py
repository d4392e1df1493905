"""Process one job: own it, prepare its images, dedup, wait for capacity, call, retry, record.

Every failure ends as a Result with one error code from shared/errors.py; nothing here raises
to Celery except CapacityWaitTimeoutError, which tells the task to hand the job back to the broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from shared import errors
from shared.images import PreparedImage
from shared.jobs import ErrorInfo, Job, Result
from shared.limiter import LimitKey, parse_ratelimit_headers
from shared.pricing import cost_usd
from shared.prompt_guard import check_prompt
from shared.storage import wait_result
from shared.text_tokens import prompt_tokens
from workers import dedup
from workers.deps import WorkerDeps
from workers.images_step import prepare_job_images
from workers.openai_call import ApiOutcome, HeadersHook, call_openai, parse_structured_output
from workers.retry import retry_delay

log = logging.getLogger(__name__)
LOCK_POLL_SECONDS = 1.0
# Errors after which the API did admit (and count) the request; the others are handed back.
_COUNTED = (errors.UpstreamTimeoutError, errors.UpstreamServerError)


async def process_job(job: Job, deps: WorkerDeps) -> Result:
    """Run ``job`` to a terminal Result (idempotent: a finished job is returned as it is)."""
    while not await deps.locks.try_acquire(job.job_id):
        # Another live worker holds it (a redelivered copy): wait for it, or for its lock to lapse.
        current = await deps.results.get(job.job_id)
        if current is not None and current.done:
            return current
        await asyncio.sleep(LOCK_POLL_SECONDS)
    try:
        return await _process_locked(job, deps)
    finally:
        await deps.locks.release(job.job_id)


async def _process_locked(job: Job, deps: WorkerDeps) -> Result:
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
    # "running" is stored with the first attempt's count (one write, not two); waiters only
    # listen for terminal statuses, so no event is published for it.
    try:
        result = await _run(job, result, deps)
    except errors.CapacityWaitTimeoutError:
        result.status = "queued"
        await deps.results.put(result)
        raise
    except errors.ImgqError as exc:
        result = _failed(result, exc)
    except Exception as exc:  # a bug must fail the job, never the worker
        log.exception("job %s: unexpected error", job.job_id)
        result = _failed(result, errors.ImgqError(f"internal error: {type(exc).__name__}"))
    result.timings.finished_at = time.time()
    await deps.results.put(result)
    await deps.events.publish(job.job_id, result.status)
    _record_finish(job, result, deps)
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


async def _run(job: Job, result: Result, deps: WorkerDeps) -> Result:
    check_prompt(job.prompt)
    images = await prepare_job_images(job, deps)
    estimate = prompt_tokens([job.prompt], [p.tokens for p in images])
    result.usage.image_tokens = sum(p.tokens for p in images)
    result.usage.estimated_input_tokens = estimate
    if not job.dedup:
        return await _call_with_retries(job, result, images, estimate, deps)
    key = dedup.dedup_key(job, images)
    ttl = deps.settings.result_ttl_seconds
    leader = await dedup.claim(deps.redis, key, job.job_id, ttl)
    if leader is not None:
        copied = await _follow(leader, result, deps)
        if copied is not None:
            return copied
        await dedup.take_over(deps.redis, key, job.job_id, ttl)
    try:
        return await _call_with_retries(job, result, images, estimate, deps)
    except errors.ImgqError:
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
    job: Job, result: Result, images: Sequence[PreparedImage], estimate: int, deps: WorkerDeps
) -> Result:
    settings, m = deps.settings, deps.metrics
    key = LimitKey(model=job.model, account=deps.account)
    parts = [(p.data_url(), p.detail) for p in images]  # detail may drop to low for a budget

    async def observe(headers: Mapping[str, str]) -> None:
        await deps.limiter.observe_headers(key, headers)
        seen = parse_ratelimit_headers(headers)
        m.set_ratelimit_remaining(
            job.model, tokens=seen.remaining_tokens, requests=seen.remaining_requests
        )
        if seen.limit_tokens is not None:
            m.limit_tokens_per_minute.labels(model=job.model).set(seen.limit_tokens)
        if seen.limit_requests is not None:
            m.limit_requests_per_minute.labels(model=job.model).set(seen.limit_requests)

    while True:
        result.attempts += 1
        await deps.results.put(result)  # attempts survive a worker's death
        try:
            outcome = await _attempt(job, deps, key, parts, estimate, observe)
        except errors.CapacityWaitTimeoutError:
            result.attempts -= 1  # no call was made: not an attempt
            raise
        except errors.ImgqError as exc:
            m.api_requests_total.labels(model=job.model, api=job.api, outcome=exc.code).inc()
            if isinstance(exc, errors.RateLimitedError):
                m.rate_limited_total.labels(model=job.model).inc()
                await deps.limiter.cooldown(key, exc.retry_after or 1.0)
                m.set_cooldown_until(job.model, time.time() + (exc.retry_after or 1.0))
            if isinstance(exc, errors.RateLimitedError | errors.UpstreamTimeoutError):
                deps.concurrency.on_overload()
                m.concurrency_limit.labels(model=job.model).set(deps.concurrency.limit)
            delay = retry_delay(exc, result.attempts, max_attempts=settings.max_attempts)
            if delay is None:
                raise
            m.retries_total.labels(model=job.model, code=exc.code).inc()
            log.info("job %s: %s, retry in %.2fs", job.job_id, exc.code, delay)
            await asyncio.sleep(delay)
            continue
        m.api_requests_total.labels(model=job.model, api=job.api, outcome="ok").inc()
        m.api_latency_seconds.labels(model=job.model, api=job.api).observe(outcome.latency_seconds)
        return _succeeded(job, result, outcome, deps)


async def _attempt(
    job: Job,
    deps: WorkerDeps,
    key: LimitKey,
    parts: Sequence[tuple[str, str]],
    estimate: int,
    observe: HeadersHook,
) -> ApiOutcome:
    """One call: a local slot first, then fleet capacity, then the API; settle or release."""
    m = deps.metrics
    # Slot before reservation: tokens reserved while queueing locally would sit idle in the
    # window and be counted earlier than the API counts them.
    async with deps.concurrency.slot(job.priority):
        waited = time.perf_counter()
        async with deps.drain.capacity_wait():
            reservation = await deps.limiter.acquire(
                key,
                estimate + job.max_output_tokens,
                priority=job.priority,
                timeout=deps.settings.capacity_wait_seconds,
                max_output_tokens=job.max_output_tokens,
            )
        m.limiter_wait_seconds.labels(model=job.model, priority=job.priority).observe(
            time.perf_counter() - waited
        )
        m.in_flight_requests.labels(model=job.model).inc()
        try:
            outcome = await call_openai(
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
        except errors.ImgqError as exc:
            await deps.limiter.release(reservation, counted=isinstance(exc, _COUNTED))
            raise
        finally:
            m.in_flight_requests.labels(model=job.model).dec()
    await deps.limiter.settle(
        reservation,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
    )
    deps.concurrency.on_success(outcome.latency_seconds, capacity_wait_s=reservation.waited_s)
    m.concurrency_limit.labels(model=job.model).set(deps.concurrency.limit)
    return outcome


def _succeeded(job: Job, result: Result, outcome: ApiOutcome, deps: WorkerDeps) -> Result:
    m = deps.metrics
    result.timings.api_seconds += outcome.latency_seconds
    result.usage.input_tokens = outcome.prompt_tokens
    result.usage.output_tokens = outcome.completion_tokens
    result.usage.billed_input_tokens = outcome.prompt_tokens
    result.usage.billed_output_tokens = outcome.completion_tokens
    result.cost_usd = cost_usd(job.model, outcome.prompt_tokens, outcome.completion_tokens)
    result.output_text = outcome.text
    for kind, n in (
        ("input", outcome.prompt_tokens),
        ("output", outcome.completion_tokens),
        ("image", result.usage.image_tokens),
        ("estimated_input", result.usage.estimated_input_tokens),
    ):
        m.tokens_total.labels(model=job.model, kind=kind).inc(n)
    m.cost_usd_total.labels(model=job.model).inc(result.cost_usd)
    if job.json_schema is not None:
        result.output_json = parse_structured_output(outcome.text, job.json_schema)
    result.status = "succeeded"
    result.error = None
    return result
