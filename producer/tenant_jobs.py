"""Jobs as one tenant sees them: its own list, and cancelling a queued job.

Ids are scoped per tenant (shared/tenant_ids.py): idempotency, reads, waits and cancels only
ever touch the caller's own namespace. Dedup is scoped by ``Job.tenant`` (workers/dedup.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.jobs import ErrorInfo, Result
from shared.jobstate import OPEN_JOBS, load_spec, state_key
from shared.lua import load_lua
from shared.tenant_ids import check_job_id, public_doc, scope, unscope
from shared.webhooks import WebhookQueue

LOCK_KEY_PREFIX = "imgq:lock:"  # workers.locks.LOCK_PREFIX (producer may not import workers)
INDEX_PREFIX = "imgq:tenantjobs:"  # + tenant ("-" in open mode): sorted set of external ids
MAX_SCAN = 1000  # ids looked at per list request, whatever the filter
MAX_LISTED = 200_000  # newest jobs kept in a tenant's list (older ones still readable by id)


@dataclass(frozen=True)
class Page:
    results: list[Result]
    next_cursor: str | None


class TenantJobs:
    """The per-tenant job list and cancelling, on the API's Redis."""

    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int) -> None:
        self._r = client
        self._ttl = ttl_seconds
        self._add = client.register_script(load_lua("producer", "tenant_index.lua"))
        self._cancel = client.register_script(load_lua("producer", "job_cancel.lua"))

    @staticmethod
    def _keys(tenant: str | None) -> list[str]:
        base = INDEX_PREFIX + (tenant or "-")
        return [base, base + ":seq"]

    async def add(self, tenant: str | None, job_id: str) -> None:
        await self._add(keys=self._keys(tenant), args=[job_id, self._ttl, MAX_LISTED])

    async def page(
        self,
        tenant: str | None,
        results: Any,
        *,
        status: str | None,
        limit: int,
        cursor: int | None,
    ) -> Page:
        """Newest first; ``cursor`` is the sequence number to continue below (exclusive)."""
        key = self._keys(tenant)[0]
        top = f"({cursor}" if cursor is not None else "+inf"
        found: list[Result] = []
        scanned, last = 0, None
        while scanned < MAX_SCAN and len(found) < limit:
            chunk: list[Any] = await self._r.zrevrangebyscore(
                key, top, "-inf", start=0, num=min(100, MAX_SCAN - scanned), withscores=True
            )
            if not chunk:
                return Page(found, None)
            ids = [bytes(m).decode() for m, _ in chunk]
            docs = await results.get_many([scope(tenant, i) for i in ids])
            for (_, score), doc in zip(chunk, docs, strict=True):
                last = int(score)
                scanned += 1
                if doc is not None and (status is None or doc.status == status):
                    found.append(doc)
                    if len(found) == limit:
                        break
            top = f"({last}"
        return Page(found, str(last) if last is not None and last > 1 else None)

    async def cancel(self, job_id: str) -> str:
        """'cancelled' or why not ('unknown', 'running', 'succeeded', 'failed')."""
        raw = await self._cancel(
            keys=[state_key(job_id), LOCK_KEY_PREFIX + job_id, OPEN_JOBS], args=[job_id]
        )
        return raw.decode() if isinstance(raw, bytes) else str(raw)


async def queue_webhook(
    r: aioredis.Redis, job_id: str, doc: dict[str, Any], tenant: str | None, lifetime: float
) -> None:
    """The webhook of a job finished here (cancelled), if its stored spec has a callback_url."""
    spec = await load_spec(r, job_id)
    if spec is not None and spec.callback_url:
        payload = {"type": "job.finished", "job": doc}
        await WebhookQueue(r).enqueue(spec.callback_url, tenant, payload, lifetime=lifetime)


def cancelled(result: Result, when: float) -> Result:
    result.status = "failed"
    result.error = ErrorInfo(code="cancelled", message="cancelled by its owner before it ran")
    result.timings.finished_at = when
    return result


__all__ = ["Page", "TenantJobs", "check_job_id", "public_doc", "scope", "unscope"]
