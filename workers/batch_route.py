"""Hand a batch-route job to the batcher: prepare it exactly as the online path would, queue it.

The job's images are loaded, validated and resized by the same code as an online call
(workers/images_step.py), the token estimate is the same, and the request body is the one the
online call sends (workers/openai_call.py), written as one Batch API line with
``custom_id`` = job id. Bad input fails the job here, before any batch (no API call spent).
A redelivered message finds the job already queued and does nothing (shared/batch_enqueue.lua).

>>> from shared.jobs import ImageSpec, Job
>>> wants_batch(Job(prompt="p", images=[ImageSpec(ref="redis:x")], route="batch"), auto=False)
True
>>> wants_batch(Job(prompt="p", images=[ImageSpec(ref="redis:x")], route="auto",
...                 priority="bulk"), auto=False)
False
"""

from __future__ import annotations

import asyncio
import json
import time

from shared import errors
from shared.batch_store import BatchStore, Entry, group_key
from shared.jobs import ErrorInfo, Job, Result
from shared.prompt_guard import check_prompt
from shared.text_tokens import prompt_tokens
from workers.commit import commit_once, write_final
from workers.deps import WorkerDeps
from workers.images_step import prepare_job_images
from workers.locks import Lease
from workers.openai_call import build_chat_request, build_responses_request

ENDPOINTS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}
LEASE_POLL_SECONDS = 0.5


def wants_batch(job: Job, *, auto: bool) -> bool:
    """Does ``job`` go through the Batch API? (``auto``: the operator's IMGQ_BATCH_AUTO)."""
    if job.kind != "analyze":
        return False  # image generation has no batch route here
    return job.route == "batch" or (job.route == "auto" and auto and job.priority == "bulk")


def store_for(deps: WorkerDeps) -> BatchStore:
    return BatchStore(deps.redis, ttl_seconds=deps.settings.result_ttl_seconds)


async def take_lease(deps: WorkerDeps, job_id: str) -> Lease | None:
    """The job's lease (waiting while another delivery holds it); None when it is finished."""
    while True:
        got = await deps.locks.acquire(job_id)
        if isinstance(got, Lease):
            return got
        if got == "done":
            return None
        await asyncio.sleep(LEASE_POLL_SECONDS)


def build_line(job: Job, parts: list[tuple[str, str]]) -> bytes:
    builder = build_chat_request if job.api == "chat" else build_responses_request
    body = builder(job.model, job.prompt, parts, job.max_output_tokens, job.json_schema)
    line = {"custom_id": job.job_id, "method": "POST", "url": ENDPOINTS[job.api], "body": body}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


async def enqueue_for_batch(job: Job, deps: WorkerDeps) -> Result:
    """Queue ``job`` for the batcher; its Result stays ``running`` until the batch answers."""
    lease = await take_lease(deps, job.job_id)
    current = await deps.results.get(job.job_id)
    if lease is None or (current is not None and current.done):
        if lease is not None:
            await deps.locks.release(lease, uncount=True)
        return current or Result(job_id=job.job_id)
    try:
        return await _enqueue_leased(job, lease, current, deps)
    finally:
        await deps.locks.release(lease, uncount=True)  # waiting for a batch is not a crash


async def _enqueue_leased(
    job: Job, lease: Lease, current: Result | None, deps: WorkerDeps
) -> Result:
    store = store_for(deps)
    result = current or Result(job_id=job.job_id)
    if await store.member(job.job_id) is not None:
        return result  # a redelivered copy: the job is already pending or in a batch
    result.status = "running"
    result.model = job.model
    result.metadata = job.metadata
    result.sources = [s.source for s in job.images]
    result.route = "batch"
    result.timings.queued_at = job.submitted_at
    result.timings.started_at = result.timings.started_at or time.time()
    try:
        check_prompt(job.prompt)
        images = await prepare_job_images(job, deps)
    except errors.ImgqError as exc:
        result.status = "failed"
        result.error = ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable)
        result.timings.finished_at = time.time()
        await write_final(deps, lease, result)
        await deps.events.publish(job.job_id, result.status)
        deps.metrics.jobs_total.labels(model=job.model, api=job.api, status="failed").inc()
        deps.metrics.job_failures_total.labels(model=job.model, code=exc.code).inc()
        return result
    estimate = prompt_tokens([job.prompt], [p.tokens for p in images])
    result.usage.image_tokens = sum(p.tokens for p in images)
    result.usage.estimated_input_tokens = estimate
    line = build_line(job, [(p.data_url(), p.detail) for p in images])
    group = group_key(deps.account, job.model, ENDPOINTS[job.api])
    entry = Entry(job=job.model_dump(mode="json"), tokens=estimate, size=len(line), at=time.time())
    if await store.enqueue(job.job_id, group, entry, line):
        await commit_once(deps, lease, result)  # "running", under the lease like online
    return result
