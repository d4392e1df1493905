"""Submitting one job for a tenant: its key's quota, its budget reservation, then the client.

Order (nothing is paid or enqueued before every check passed):
  1. a known id (in the tenant's namespace) is answered as it stands (200);
  2. the key's quota: model, ``max_output_tokens``, priority -> failed ``quota_exceeded``;
  3. the key's budget: the call's upper estimate is reserved atomically -> ``budget_exceeded``;
  4. the client's own admission and enqueue; a job refused there (or never sent) gets its
     reservation back at once, and the worker settles the rest with the billed cost.
Refusals are recorded as failed jobs (202 with the document), like every submit-time check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from producer.client import AsyncClient, SubmitRequest
from producer.tenant_jobs import TenantJobs, public_doc, scope
from shared import errors
from shared.budget import Budgets, estimate_cost_usd
from shared.catalogue import Catalogue
from shared.jobs import ErrorInfo, Result, new_job_id
from shared.metrics import Metrics
from shared.settings import Settings
from shared.storage import JobEvents, ResultStore
from shared.storage.wait_hub import WaitHub, read_result
from shared.tenants import ApiKey, KeyStore


@dataclass
class ApiDeps:
    """What the tenant-aware routes share (one per app)."""

    settings: Settings
    client: AsyncClient
    redis: aioredis.Redis
    results: ResultStore
    events: JobEvents
    hub: WaitHub
    keys: KeyStore | None
    budgets: Budgets
    jobs: TenantJobs
    metrics: Metrics
    catalogue: Catalogue
    max_body: int
    body_timeout: float


def tenant_of(key: ApiKey | None) -> str | None:
    return None if key is None else key.tenant


def check_quota(key: ApiKey, model: str, max_output_tokens: int, priority: str) -> None:
    """QuotaExceededError when the key may not run this job as asked."""
    p = key.policy
    if not p.allows_model(model):
        raise errors.QuotaExceededError(
            f"this API key may not use model {model[:80]!r} (allowed: {', '.join(p.models)})"
        )
    if p.max_output_tokens is not None and max_output_tokens > p.max_output_tokens:
        raise errors.QuotaExceededError(
            f"max_output_tokens {max_output_tokens} is over this key's {p.max_output_tokens}"
        )
    if p.priorities and priority not in p.priorities:
        raise errors.QuotaExceededError(
            f"this API key may not submit priority {priority!r} (allowed: {', '.join(p.priorities)})"
        )


async def record_refused(
    deps: ApiDeps, req: SubmitRequest, job_id: str, exc: errors.ImgqError
) -> Result:
    """A failed job record for a refusal (or the record already there under this id)."""
    now = time.time()
    failed = Result(job_id=job_id, status="failed", model=(req.model or "")[:80] or None)
    failed.error = ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable)
    failed.timings.queued_at = failed.timings.finished_at = now
    existing = await deps.results.create(failed)
    if existing is not None:
        return existing
    await deps.events.publish(job_id, "failed")
    return failed


async def _reserve(deps: ApiDeps, key: ApiKey, req: SubmitRequest, job_id: str) -> None:
    """Reserve the job's estimated cost; BudgetExceededError/QuotaExceededError when not."""
    model = req.model or deps.settings.default_model
    estimate = estimate_cost_usd(
        deps.catalogue,
        model,
        req.prompt,
        len(req.images),
        req.max_output_tokens or deps.settings.default_max_output_tokens,
    )
    if estimate is None:
        raise errors.QuotaExceededError(
            f"model {model[:80]!r} has no price in the catalogue: a key with a budget cannot use it"
        )
    await deps.budgets.reserve_or_refuse(key, job_id, estimate)


async def submit_for(
    deps: ApiDeps, key: ApiKey | None, req: SubmitRequest, *, budget_spent: bool = False
) -> tuple[int, dict[str, Any], str | None]:
    """(HTTP status, document, refusal code) for one job. ``budget_spent``: refuse with
    budget_exceeded without trying (an earlier item of the same batch ran out)."""
    tenant = tenant_of(key)
    external = req.job_id or new_job_id()
    job_id = scope(tenant, external)
    existing = await read_result(deps.results, job_id)  # unreadable: UnreadableResultError
    if existing is not None:
        return 200, public_doc(existing, tenant), None
    req.job_id, req.tenant = job_id, tenant
    model = req.model or deps.settings.default_model
    max_out = req.max_output_tokens or deps.settings.default_max_output_tokens
    reserved = False
    try:
        if key is not None:
            check_quota(key, model, max_out, req.priority)
            if budget_spent and key.policy.budget_usd is not None:
                raise errors.BudgetExceededError(
                    "this API key's budget ran out earlier in the batch"
                )
            if key.policy.budget_usd is not None:
                await _reserve(deps, key, req, job_id)
                reserved = True
    except (errors.QuotaExceededError, errors.BudgetExceededError) as exc:
        failed = await record_refused(deps, req, job_id, exc)
        await deps.jobs.add(tenant, external)
        return 202, public_doc(failed, tenant), exc.code
    try:
        (job_id,) = await deps.client.submit_many([req])
        result = await read_result(deps.results, job_id)
    except errors.StorageUnavailableError:
        if reserved:
            await deps.budgets.release(job_id)
        raise
    await deps.jobs.add(tenant, external)
    if result is not None and result.status == "failed":  # refused by admission: not sent
        if reserved:
            await deps.budgets.release(job_id)
        return 202, public_doc(result, tenant), result.error.code if result.error else None
    label = deps.catalogue.canonical(model)  # bounded: never a caller-chosen label value
    deps.metrics.jobs_submitted_total.labels(model=label, priority=req.priority).inc()
    doc = public_doc(result, tenant) if result else {"job_id": external, "status": "queued"}
    return 202, doc, None


__all__ = ["ApiDeps", "check_quota", "record_refused", "submit_for", "tenant_of"]
