"""The HTTP API's image generation routes (issue 15), registered by ``producer.api.create_app``.

    POST /v1/images/generations   JSON {"prompt", "model", "n", "size", "quality", "background",
                                  "output_format", "output_compression", "moderation", "style",
                                  "response_format", "metadata", "priority", "job_id"}
    POST /v1/images/edits         multipart/form-data: files `image` (or `image[]`, repeatable),
                                  optional file `mask`, the same fields as form fields
    GET  /v1/jobs/{job_id}/images/{i}   the i-th output image's bytes

Both POSTs answer 202 with the job's result document (``failed`` with its code when refused at
submit: options the model does not take, a bad mask), 200 when ``job_id`` already exists. Bodies
are bounded in size and time like ``POST /v1/jobs``.

Keys with quotas or a budget (issue 11), in this order, before anything is stored or enqueued:
the key's models and priorities (``quota_exceeded``; ``max_output_tokens`` caps text answers and
does not apply here), then the call's upper cost (``shared.budget.estimate_generation_usd``) is
reserved (``budget_exceeded``). A job the client then refuses gets it back at once; the worker
settles the rest with the bill, a cancel (``DELETE /v1/jobs/{id}``) refunds it.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from aiohttp import web

from producer.api_body import form_parts, form_text
from producer.api_edge import API_KEY
from producer.api_jobs import DEPS, check_callback
from producer.api_scope import scoped_fields
from producer.api_submit import ApiDeps, check_quota, record_refused
from producer.client import AsyncClient, SubmitRequest
from producer.generation_jobs import split_options
from shared import errors
from shared.budget import estimate_generation_usd
from shared.errors import ImgqError, StorageUnavailableError
from shared.generation import GenerationOptions, Kind, check_options
from shared.images.fetch import AllowList
from shared.tenants import ApiKey

_JOB_FIELDS = ("prompt", "metadata", "priority", "job_id", "tenant", "callback_url")
_INT_FIELDS = ("n", "output_compression")
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def _bad(message: str, code: str = "invalid_job", status: int = 400) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _fields(raw: dict[str, Any], *, form: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if form and name in _INT_FIELDS:
            if not str(value).strip().isdigit():
                raise ValueError(f"`{name}` must be a whole number, got {value!r}")
            value = int(value)
        if form and name == "metadata":
            value = json.loads(value)
        out[name] = value
    if not isinstance(out.get("prompt"), str) or not out["prompt"]:
        raise ValueError("`prompt` is required")
    return out


async def _read_edit(
    request: web.Request, max_body: int
) -> tuple[dict[str, Any], list[bytes], bytes | None]:
    if request.content_type != "multipart/form-data":
        raise ValueError("edits are multipart/form-data: files `image` (and `mask`) plus fields")
    fields: dict[str, Any] = {}
    images: list[bytes] = []
    mask: bytes | None = None
    async for part, data in form_parts(request, max_body):
        if part.name == "mask":
            mask = data
        elif part.name in ("image", "image[]"):
            images.append(data)
        elif part.name:
            fields[part.name] = form_text(part, data)
    return _fields(fields, form=True), images, mask


def _sizes(images: list[bytes]) -> list[tuple[int, int] | None]:
    """Each edit input's size from its header (None: unreadable; the client refuses it)."""
    from PIL import Image

    sizes: list[tuple[int, int] | None] = []
    for data in images:
        try:
            with Image.open(io.BytesIO(data)) as img:
                sizes.append(img.size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            sizes.append(None)
    return sizes


async def _reserve(
    deps: ApiDeps,
    key: ApiKey | None,
    job_id: str,
    prompt: str,
    opts: GenerationOptions,
    images: list[bytes],
    priority: str,
    edit: bool,
) -> bool:
    """The key's quotas, then its budget: True when the call's upper cost was reserved.
    Raises QuotaExceededError / BudgetExceededError (nothing reserved)."""
    if key is None:
        return False
    check_quota(key, opts.model, 1, priority)  # 1: an image call has no text output to cap
    if key.policy.budget_usd is None or check_options(opts, prompt=prompt, edit=edit):
        return False  # no budget; or options the client refuses (invalid_job) before any call
    sizes = await asyncio.to_thread(_sizes, images) if images else []
    estimate = estimate_generation_usd(deps.catalogue, opts, prompt, sizes)
    if estimate is None:  # every image model is priced; an operator's catalogue may not be
        raise errors.QuotaExceededError(
            f"model {opts.model!r} has no price: a budget cannot cover it"
        )
    await deps.budgets.reserve_or_refuse(key, job_id, estimate)
    return True


async def _submit(
    request: web.Request,
    client: AsyncClient,
    kind: Kind,
    fields: dict[str, Any],
    images: list[bytes],
    mask: bytes | None,
) -> web.Response:
    deps = request.app[DEPS]
    job = {k: fields.pop(k) for k in _JOB_FIELDS if k in fields}
    opts, unknown = split_options(fields)
    if unknown:
        return _bad(f"unknown field(s): {', '.join(sorted(unknown))}")
    prompt = job.pop("prompt")
    job_id = job["job_id"]  # scoped_fields always sets one
    callback = job.get("callback_url")
    if callback is not None:  # issue 11's webhooks, for picture jobs too; the SSRF guard first
        allow = AllowList(deps.settings.fetch_allow_hosts)
        problem = (
            await check_callback(callback, allow)
            if isinstance(callback, str)
            else "`callback_url` is an http(s) URL of at most 2048 characters"
        )
        if problem is not None:
            return _bad(problem)
    reserved = False
    try:
        existing = await client.get(job_id)
        if existing is not None:
            return web.json_response(existing.model_dump(mode="json"), status=200)
        try:
            priority = str(job.get("priority") or "interactive")
            edit = kind == "edit"
            reserved = await _reserve(
                deps, request.get(API_KEY), job_id, prompt, opts, images, priority, edit
            )
        except (errors.QuotaExceededError, errors.BudgetExceededError) as exc:
            req = SubmitRequest(images=[], prompt=prompt, model=opts.model)
            failed = await record_refused(deps, req, job_id, exc)
            return web.json_response(failed.model_dump(mode="json"), status=202)
        if kind == "edit":
            await client.edit(images, prompt, mask=mask, **opts.api_params(), **job)
        else:
            await client.generate(prompt, **opts.api_params(), **job)
        result = await client.get(job_id)
    except StorageUnavailableError as exc:
        if reserved:
            await deps.budgets.release(job_id)
        return _bad(exc.message, exc.code, status=503)
    # Refused by the client's checks: never sent, no call (a worker's failure settles itself).
    refused = result is not None and result.status == "failed" and not result.timings.started_at
    if reserved and refused:
        await deps.budgets.release(job_id)
    if not refused:
        label = deps.catalogue.canonical(opts.model)  # bounded: never a caller-chosen label value
        deps.metrics.jobs_submitted_total.labels(model=label, priority=priority).inc()
    doc = result.model_dump(mode="json") if result else {"job_id": job_id, "status": "queued"}
    return web.json_response(doc, status=202)


def add_routes(
    app: web.Application, client: AsyncClient, *, max_body: int, body_timeout: float
) -> None:
    """Register the generation routes; ``client`` must be untrusted (no local paths, no s3://)."""

    async def generations(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(body_timeout):
                body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            fields = scoped_fields(request, _fields(body, form=False))  # issue 11: tenant ids
        except TimeoutError:
            return _bad("the request body did not arrive in time", "request_timeout", 408)
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        except ImgqError as exc:
            return _bad(exc.message, exc.code)
        return await _guarded(_submit(request, client, "generate", fields, [], None))

    async def edits(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(body_timeout):
                fields, images, mask = await _read_edit(request, max_body)
                fields = scoped_fields(request, fields)  # issue 11: tenant ids
        except TimeoutError:
            return _bad("the request body did not arrive in time", "request_timeout", 408)
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return await _guarded(_submit(request, client, "edit", fields, images, mask))

    async def output_image(request: web.Request) -> web.Response:
        job_id, index = request.match_info["job_id"], request.match_info["index"]
        try:
            result = await client.get(job_id)
            if result is None or not index.isdigit() or int(index) >= len(result.images):
                return _bad(f"no image {index} for job {job_id}", "not_found", 404)
            image = result.images[int(index)]
            data = await client.read_image(image.ref)
        except ImgqError as exc:
            status = 503 if exc.retryable else 404
            return _bad(exc.message, exc.code, status)
        return web.Response(
            body=data, content_type=_MIME.get(image.format, "application/octet-stream")
        )

    app.router.add_post("/v1/images/generations", generations)
    app.router.add_post("/v1/images/edits", edits)
    app.router.add_get("/v1/jobs/{job_id}/images/{index}", output_image)


async def _guarded(submit: Any) -> web.Response:
    try:
        resp: web.Response = await submit
    except ImgqError as exc:  # options that do not parse (e.g. n="two")
        return _bad(exc.message, exc.code)
    return resp
