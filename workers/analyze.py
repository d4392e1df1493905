"""A vision (analyze) job's own steps: prompt checks, its images, dedup, the call, the bill.

The processor (workers/processor.py) owns the job's lifecycle around this: its lease, the
result writes and what a failure becomes. ``run_analyze`` returns the succeeded Result or
raises the job's typed error; retryable API errors are retried here, by our policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from shared import errors
from shared.catalogue import canonical_model, default_catalogue
from shared.images import PreparedImage
from shared.jobs import Job, Result
from shared.limiter import LimitKey, parse_ratelimit_headers
from shared.prompt_guard import check_prompt
from shared.storage import wait_result
from shared.text_tokens import prompt_tokens
from workers import dedup
from workers.call_step import Ask, Spend, call_step, fenced_before_call, on_call_error
from workers.commit import STORAGE_ERRORS
from workers.deps import WorkerDeps
from workers.images_step import prepare_job_images
from workers.locks import Lease
from workers.openai_call import ApiOutcome, call_openai, parse_structured_output
from workers.stream_call import job_call_args, stream_job_call

INLINE_PROMPT_CHARS = 2048  # longer prompts are checked and tokenised on the executor
T = TypeVar("T")


async def off_loop(deps: WorkerDeps, fn: Callable[..., T], *args: Any) -> T:
    """Run CPU work (tokenising, prompt checks, schema validation) on the worker's pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(deps.executor, functools.partial(fn, *args))


async def run_analyze(job: Job, result: Result, lease: Lease, deps: WorkerDeps) -> Result:
    """Run a vision job to success (``result`` filled in), or raise its typed error."""
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
        return call_openai(deps.client, **job_call_args(deps, job, parts), on_headers=observe)

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
