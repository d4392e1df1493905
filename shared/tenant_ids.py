"""Job ids as a tenant sees them: scoped in storage, plain in every answer.

A tenant's job ``X`` is stored as ``<tenant>~X``: two tenants may both use ``order-7``, and one
that takes an id first never hands another tenant its job. Open mode (no keys, tenant None)
stores ids as given.

>>> scope("acme", "order-7"), scope(None, "order-7")
('acme~order-7', 'order-7')
>>> unscope("acme", "acme~order-7"), unscope("acme", "other~order-7")
('order-7', None)
>>> check_job_id("order-7"), check_job_id("a b")
(True, False)
"""

from __future__ import annotations

import re
from typing import Any

from shared.jobs import Result
from shared.redact import redact_source

SEP = "~"
_JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def check_job_id(job_id: str) -> bool:
    return bool(_JOB_ID.match(job_id))


def scope(tenant: str | None, job_id: str) -> str:
    return job_id if tenant is None else f"{tenant}{SEP}{job_id}"


def unscope(tenant: str | None, stored: str) -> str | None:
    """The id the tenant knows, or None when ``stored`` is not the tenant's."""
    if tenant is None:
        return stored
    prefix = tenant + SEP
    return stored[len(prefix) :] if stored.startswith(prefix) else None


def public_doc(result: Result, tenant: str | None) -> dict[str, Any]:
    """The result as its tenant may see it: its own ids, sources without secrets."""
    doc = result.model_dump(mode="json")
    doc["job_id"] = unscope(tenant, result.job_id) or result.job_id
    if result.dedup_of is not None:
        doc["dedup_of"] = unscope(tenant, result.dedup_of)
    doc["sources"] = [None if s is None else redact_source(s) for s in result.sources]
    return doc


__all__ = ["check_job_id", "public_doc", "scope", "unscope"]
