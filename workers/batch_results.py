"""Map a finished batch's output and error files back to its jobs, by ``custom_id`` (= job id).

Per job, exactly one outcome, recorded once (``mark_applied``) so a resumed download skips it:
  - a 200 line: the same Result as an online answer (text, JSON, usage), at the batch price,
    ``route: batch`` and the imgq batch id;
  - a 4xx line: the online path's typed error (workers/openai_call.map_status_error);
  - a 5xx/429 line, a ``batch_expired`` line, or no line (failed/expired batch): "unfinished":
    re-routed online (IMGQ_BATCH_FALLBACK=online) or failed ``batch_expired``/``batch_failed``;
    a cancelled batch fails them ``batch_cancelled``.
Results are written under the job's lease (workers/commit.py), like online results.

>>> parse_jsonl(b'{"custom_id": "a", "x": 1}\\n\\n{"custom_id": "b"}\\n')
{'a': {'custom_id': 'a', 'x': 1}, 'b': {'custom_id': 'b'}}
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import openai

from shared import errors
from shared.batch_store import BatchStore, Entry
from shared.budget import settle_job
from shared.catalogue import catalogue_for
from shared.jobs import ErrorInfo, Job, Result
from workers import webhooks
from workers.batch_route import take_lease
from workers.commit import write_final
from workers.deps import WorkerDeps
from workers.openai_call import _read_answer, map_status_error, parse_structured_output

log = logging.getLogger(__name__)
Requeue = Callable[[Job], Awaitable[None]]


def parse_jsonl(data: bytes) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for raw in data.splitlines():
        if raw.strip():
            line = json.loads(raw)
            out[str(line.get("custom_id"))] = line
    return out


@dataclass
class Applied:
    succeeded: int = 0
    failed: int = 0
    rerouted: int = 0
    saved_usd: float = 0.0


def _line_error(line: dict[str, Any], url: str) -> errors.ImgqError:
    """The typed error of a non-200 line, as the online path would have raised it."""
    resp = line.get("response")
    if not resp:
        err = line.get("error") or {}
        code = str(err.get("code") or "")
        if code == "batch_expired":
            return errors.BatchExpiredError(str(err.get("message") or "the batch expired"))
        return errors.BatchFailedError(f"{code}: {err.get('message')}")
    status = int(resp.get("status_code") or 500)
    body = resp.get("body")
    request = httpx2.Request("POST", f"https://api.openai.com{url}")
    response = httpx2.Response(status, request=request, json=body)
    message = str(((body or {}).get("error") or {}).get("message") or f"HTTP {status}")
    return map_status_error(openai.APIStatusError(message, response=response, body=body))


def _succeed(job: Job, result: Result, body: dict[str, Any], deps: WorkerDeps) -> float:
    """Fill ``result`` from a 200 body; the USD saved against the online price."""
    text, n_in, n_out = _read_answer(job.api, json.dumps(body).encode())
    cat = catalogue_for(deps.settings)
    result.usage.input_tokens = result.usage.billed_input_tokens = n_in
    result.usage.output_tokens = result.usage.billed_output_tokens = n_out
    result.cost_usd = cat.cost_usd(job.model, n_in, n_out, batch=True)
    result.output_text = text
    if job.json_schema is not None:
        result.output_json = parse_structured_output(text, job.json_schema)
    result.status = "succeeded"
    result.error = None
    m = deps.metrics
    for kind, n in (("input", n_in), ("output", n_out), ("image", result.usage.image_tokens)):
        m.tokens_total.labels(model=job.model, kind=kind).inc(n)
    if result.cost_usd is not None:
        m.cost_usd_total.labels(model=job.model).inc(result.cost_usd)
    online = cat.cost_usd(job.model, n_in, n_out)
    return 0.0 if online is None or result.cost_usd is None else online - result.cost_usd


async def _finish(job: Job, result: Result, deps: WorkerDeps) -> bool:
    """Write a terminal result under the job's lease; False when it was already finished."""
    lease = await take_lease(deps, job.job_id)
    if lease is None:
        return False
    try:
        result.timings.finished_at = time.time()
        await write_final(deps, lease, result)
    finally:
        await deps.locks.release(lease, uncount=True)
    await deps.events.publish(job.job_id, result.status)
    await settle_job(deps.redis, job, result)  # issue 11: the tenant's budget, with the bill
    await webhooks.schedule(deps, job, result)  # issue 11: the job's callback_url, if any
    deps.metrics.jobs_total.labels(model=job.model, api=job.api, status=result.status).inc()
    if result.error is not None:
        deps.metrics.job_failures_total.labels(model=job.model, code=result.error.code).inc()
    return True


def line_image_urls(line: dict[str, Any]) -> list[str]:
    """The image data URLs of a request line, in order (either API's shape).

    >>> line_image_urls({"body": {"messages": [{"content": [{"type": "text", "text": "t"},
    ...     {"type": "image_url", "image_url": {"url": "data:a"}}]}]}})
    ['data:a']
    >>> line_image_urls({"body": {"input": [{"content": [
    ...     {"type": "input_image", "image_url": "data:b"}]}]}})
    ['data:b']
    """
    body = line.get("body") or {}
    urls: list[str] = []
    for msg in body.get("messages") or body.get("input") or []:
        for part in msg.get("content") or []:
            if part.get("type") == "image_url":
                urls.append(part["image_url"]["url"])
            elif part.get("type") == "input_image":
                urls.append(part["image_url"])
    return urls


async def _with_fresh_images(store: BatchStore, job: Job, deps: WorkerDeps) -> Job:
    """``job`` with its images stored again from its batch line (already prepared), so the
    online run does not depend on the original images, whose TTL may have run out while the
    batch waited (an expired batch is 24 h old)."""
    (raw,) = await store.lines([job.job_id])
    if raw is None:
        return job
    urls = line_image_urls(json.loads(raw))
    if len(urls) != len(job.images) or not all(u.startswith("data:") for u in urls):
        return job
    specs = []
    for spec, url in zip(job.images, urls, strict=True):
        ref = await deps.images.put(base64.b64decode(url.split(",", 1)[1]))
        specs.append(spec.model_copy(update={"ref": ref}))
    return job.model_copy(update={"images": specs})


def _unfinished_error(batch_status: str) -> errors.ImgqError:
    if batch_status == "cancelled":
        return errors.BatchCancelledError("the job's batch was cancelled before answering it")
    if batch_status == "expired":
        return errors.BatchExpiredError("the job's batch expired before answering it")
    return errors.BatchFailedError(f"the job's batch ended {batch_status} without answering it")


async def apply_one(
    store: BatchStore,
    bid: str,
    batch_status: str,
    entry: Entry,
    line: dict[str, Any] | None,
    deps: WorkerDeps,
    requeue: Requeue,
    counts: Applied,
) -> str:
    """Apply one job's line (or its absence); the outcome recorded for it."""
    job = Job.model_validate(entry.job)
    result = await deps.results.get(job.job_id) or Result(job_id=job.job_id)
    if result.done:
        return "already_done"
    result.route, result.batch_id = "batch", bid
    url = "/v1/chat/completions" if job.api == "chat" else "/v1/responses"
    resp = (line or {}).get("response") or {}
    exc: errors.ImgqError | None = None
    if line is not None and resp.get("status_code") == 200:
        try:
            counts.saved_usd += _succeed(job, result, resp.get("body") or {}, deps)
        except errors.ImgqError as e:
            exc = e
    else:
        exc = _line_error(line, url) if line is not None else _unfinished_error(batch_status)
        unfinished = exc.retryable or isinstance(
            exc, errors.BatchExpiredError | errors.BatchFailedError
        )
        if line is None or unfinished:
            if batch_status == "cancelled":
                exc = _unfinished_error("cancelled")
            elif deps.settings.batch_fallback == "online":
                result.route, result.status = "online", "queued"
                await deps.results.put(result)
                deadline = time.time() + deps.settings.job_deadline_seconds
                await store.extend_deadline(job.job_id, deadline)
                online = await _with_fresh_images(store, job, deps)
                online = online.model_copy(update={"route": "online", "expires_at": deadline})
                await requeue(online)
                counts.rerouted += 1
                return "rerouted"
            # else (IMGQ_BATCH_FALLBACK=fail): the job fails with the line's own error.
    if exc is not None:
        result.status = "failed"
        result.error = ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable)
    if await _finish(job, result, deps):
        if result.status == "succeeded":
            counts.succeeded += 1
        else:
            counts.failed += 1
    return result.status


async def apply_batch(
    store: BatchStore,
    bid: str,
    batch_status: str,
    lines: dict[str, dict[str, Any]],
    deps: WorkerDeps,
    requeue: Requeue,
) -> Applied:
    """Apply every job of batch ``bid`` not applied yet (safe to run again after a crash)."""
    counts = Applied()
    done = await store.applied(bid)
    for job_id, entry in (await store.jobs(bid)).items():
        if job_id in done:
            continue
        outcome = await apply_one(
            store, bid, batch_status, entry, lines.get(job_id), deps, requeue, counts
        )
        await store.mark_applied(bid, job_id, outcome)
    return counts
