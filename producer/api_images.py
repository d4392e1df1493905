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
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from producer.api_body import form_parts, form_text
from producer.api_scope import scoped_fields
from producer.client import AsyncClient
from producer.generation_jobs import split_options
from shared.errors import ImgqError, StorageUnavailableError
from shared.generation import Kind

_JOB_FIELDS = ("prompt", "metadata", "priority", "job_id", "tenant")
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


async def _submit(
    client: AsyncClient, kind: Kind, fields: dict[str, Any], images: list[bytes], mask: bytes | None
) -> web.Response:
    job = {k: fields.pop(k) for k in _JOB_FIELDS if k in fields}
    opts, unknown = split_options(fields)
    if unknown:
        return _bad(f"unknown field(s): {', '.join(sorted(unknown))}")
    prompt = job.pop("prompt")
    try:
        existing = await client.get(job["job_id"]) if job.get("job_id") else None
        if existing is not None:
            return web.json_response(existing.model_dump(mode="json"), status=200)
        if kind == "edit":
            job_id = await client.edit(images, prompt, mask=mask, **opts.api_params(), **job)
        else:
            job_id = await client.generate(prompt, **opts.api_params(), **job)
        result = await client.get(job_id)
    except StorageUnavailableError as exc:
        return _bad(exc.message, exc.code, status=503)
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
        return await _guarded(_submit(client, "generate", fields, [], None))

    async def edits(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(body_timeout):
                fields, images, mask = await _read_edit(request, max_body)
                fields = scoped_fields(request, fields)  # issue 11: tenant ids
        except TimeoutError:
            return _bad("the request body did not arrive in time", "request_timeout", 408)
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return await _guarded(_submit(client, "edit", fields, images, mask))

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
