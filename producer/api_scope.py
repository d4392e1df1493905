"""Tenant scoping for the image generation routes (producer/api_images.py, issue 15).

The generation handlers call ``scoped_fields`` on what they parsed (the job id goes into the
caller's namespace and the tenant is set from the key, whatever the body said); this
middleware scopes ``/v1/jobs/{job_id}/images/{index}``, turns the stored ids in their answers
back into the caller's and puts new jobs in the tenant's list (``GET /v1/jobs``). A key's
quotas and budget apply in producer/api_images.py, as for vision jobs.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from producer.api_edge import API_KEY, Handler, error_response
from producer.api_jobs import DEPS
from shared.jobs import Result, new_job_id
from shared.tenant_ids import check_job_id, public_doc, scope

GENERATION_PATHS = frozenset({"/v1/images/generations", "/v1/images/edits"})
OUTPUT_IMAGE = "/v1/jobs/{job_id}/images/{index}"


def scoped_fields(request: web.Request, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the job id in the caller's namespace and the caller's tenant."""
    key = request.get(API_KEY)
    tenant = None if key is None else key.tenant
    job_id = fields.get("job_id")
    if job_id is not None and (not isinstance(job_id, str) or not check_job_id(job_id)):
        raise ValueError("`job_id` is 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'")
    return {**fields, "job_id": scope(tenant, job_id or new_job_id()), "tenant": tenant}


@web.middleware
async def scope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.get(API_KEY)
    tenant = None if key is None else key.tenant
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical == OUTPUT_IMAGE and tenant is not None:
        job_id = request.match_info.get("job_id", "")
        if not check_job_id(job_id):
            return error_response(404, "not_found", "no such job")
        request.match_info["job_id"] = scope(tenant, job_id)
    if request.path not in GENERATION_PATHS:
        return await handler(request)
    resp = await handler(request)
    if not isinstance(resp, web.Response) or resp.status >= 400:
        return resp
    try:
        result = Result.model_validate(json.loads(resp.body))  # type: ignore[arg-type]
    except ValueError:
        return resp
    doc = public_doc(result, tenant)
    if resp.status == 202:  # a new job: in the tenant's list (GET /v1/jobs) too
        await request.app[DEPS].jobs.add(tenant, doc["job_id"])
    return web.json_response(doc, status=resp.status)


__all__ = ["scope_middleware", "scoped_fields"]
