"""The paid call step shared by vision and image-generation jobs.

One attempt: a local concurrency slot, fleet capacity (waiting out a Redis outage within the
capacity wait), the fenced before-call check, the in-flight gauge, the call, then settle or
release. Limiter bookkeeping after the call is best effort: an answer already paid for is never
lost to a failed limiter write. ``on_call_error`` is the shared reaction to a failed attempt
(metrics, 429 cooldown, back-off of the concurrency limit) and returns the retry delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from shared import errors
from shared.jobs import Job, Result
from shared.limiter import LimitKey, Reservation
from workers.commit import STORAGE_ERRORS, write_running
from workers.deps import WorkerDeps
from workers.locks import Lease
from workers.retry import retry_delay

log = logging.getLogger(__name__)
ACQUIRE_GRACE_SECONDS = 5.0
# Errors after which the API did admit (and count) the request; the others are handed back.
COUNTED = (errors.UpstreamTimeoutError, errors.UpstreamServerError)
T = TypeVar("T")


class StorageDown(Exception):
    """Redis/S3 failed before a call (kept apart from the API's retryable errors)."""


@dataclass
class Spend:
    """What one successful call cost, for the limiter's settle (``headers``: the answer's
    ``x-ratelimit-*``, resynced in the same round trip)."""

    prompt_tokens: int
    completion_tokens: int
    latency_seconds: float
    headers: Mapping[str, str] | None = field(default=None)


@dataclass
class Ask:
    """The capacity one call reserves."""

    key: LimitKey
    tokens: int
    max_output_tokens: int
    model_label: str  # the metrics' model label
    images: int = 0


def fenced_before_call(
    deps: WorkerDeps, lease: Lease, result: Result
) -> Callable[[], Awaitable[None]]:
    """The fencing check and the attempt count in one step, right before the paid call: a
    worker whose lease lapsed (paused, partitioned) stops here. Attempts survive a crash."""

    async def before_call() -> None:
        result.attempts += 1
        try:
            await write_running(deps, lease, result)
        except BaseException as exc:
            result.attempts -= 1
            if isinstance(exc, STORAGE_ERRORS):  # not an API failure: hand the delivery back
                raise StorageDown(str(exc)) from exc
            raise

    return before_call


async def call_step(
    job: Job,
    deps: WorkerDeps,
    ask: Ask,
    before_call: Callable[[], Awaitable[None]],
    call: Callable[[], Awaitable[T]],
    spend: Callable[[T], Spend],
    failed_headers: Callable[[], Mapping[str, str] | None] = lambda: None,
) -> T:
    """One call: a local slot, fleet capacity, the fencing check, the API; settle or release.

    The answer's rate-limit headers ride on the settle (``Spend.headers``) or, for a failed
    call, on the release (``failed_headers()``): one limiter round trip per call, not two.
    """
    m = deps.metrics
    # Slot before reservation: tokens reserved while queueing locally would sit idle in the
    # bucket and be counted earlier than the API counts them.
    async with deps.concurrency.slot(job.priority):
        waited = time.perf_counter()
        async with deps.drain.capacity_wait():
            reservation = await acquire_capacity(job, deps, ask)
        m.limiter_wait_seconds.labels(model=ask.model_label, priority=job.priority).observe(
            time.perf_counter() - waited
        )
        try:
            await before_call()
        except BaseException:
            await deps.limiter.release(reservation, counted=False)  # no call was made
            raise
        m.in_flight_requests.labels(model=ask.model_label).inc()
        try:
            answer = await call()
        except errors.ImgqError as exc:
            with limiter_best_effort(job):
                await deps.limiter.release(
                    reservation, counted=isinstance(exc, COUNTED), headers=failed_headers()
                )
            raise
        finally:
            m.in_flight_requests.labels(model=ask.model_label).dec()
    s = spend(answer)
    with limiter_best_effort(job):  # the answer is paid for: never lose it to a limiter write
        await deps.limiter.settle(
            reservation,
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
            headers=s.headers,
        )
    deps.concurrency.on_success(s.latency_seconds, capacity_wait_s=reservation.waited_s)
    m.concurrency_limit.labels(model=ask.model_label).set(deps.concurrency.limit)
    return answer


async def acquire_capacity(job: Job, deps: WorkerDeps, ask: Ask) -> Reservation:
    """Fleet capacity for one call; while Redis is unreachable, wait for it (within the capacity
    wait) rather than spin: a Redis restart holds jobs, it does not fail or bounce them."""
    deadline = time.monotonic() + deps.settings.capacity_wait_seconds
    delay = 0.25
    while True:
        left = max(0.1, deadline - time.monotonic())
        try:
            # Bounded here too: a limiter that lost Redis mid-wait must not hold the job forever.
            # (asyncio.timeout, not wait_for: no extra task per job on Python 3.11.)
            async with asyncio.timeout(left + ACQUIRE_GRACE_SECONDS):
                return await deps.limiter.acquire(
                    ask.key,
                    ask.tokens,
                    priority=job.priority,
                    timeout=left,
                    max_output_tokens=ask.max_output_tokens,
                    images=ask.images,
                    tenant=job.tenant,  # issue 11: weighted fair share between tenants
                )
        except TimeoutError as exc:
            raise errors.CapacityWaitTimeoutError("no limiter answer in time") from exc
        except STORAGE_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise errors.CapacityWaitTimeoutError(f"limiter unreachable: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def on_call_error(
    job: Job, deps: WorkerDeps, ask: Ask, api: str, exc: errors.ImgqError, attempts: int
) -> float:
    """React to a failed attempt; the delay before the next one, or ``exc`` raised again when
    it is not retried (or when no call was made: no attempt, and not the API's failure)."""
    if isinstance(exc, errors.CapacityWaitTimeoutError | errors.StorageUnavailableError):
        raise exc
    m, model = deps.metrics, ask.model_label
    m.api_requests_total.labels(model=model, api=api, outcome=exc.code).inc()
    if isinstance(exc, errors.RateLimitedError):
        m.rate_limited_total.labels(model=model).inc()
        await deps.limiter.cooldown(ask.key, exc.retry_after or 1.0)
        m.set_cooldown_until(model, time.time() + (exc.retry_after or 1.0))
    if isinstance(exc, errors.RateLimitedError | errors.UpstreamTimeoutError):
        deps.concurrency.on_overload()
        m.concurrency_limit.labels(model=model).set(deps.concurrency.limit)
    delay = retry_delay(exc, attempts, max_attempts=deps.settings.max_attempts)
    if delay is None:
        raise exc
    m.retries_total.labels(model=model, code=exc.code).inc()
    log.info("job %s: %s, retry in %.2fs", job.job_id, exc.code, delay)
    return delay


@contextlib.contextmanager
def limiter_best_effort(job: Job) -> Iterator[None]:
    try:
        yield
    except STORAGE_ERRORS as exc:
        log.warning("job %s: limiter bookkeeping skipped (%s)", job.job_id, exc)
