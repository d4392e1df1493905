"""The HTTP API (aiohttp): submit jobs as JSON or multipart uploads, read or wait for results.

    POST /v1/jobs              JSON {"images": [{"url"|"data": ..., "detail": "auto"}], "prompt": ...}
                               or multipart/form-data: files `image` (repeatable) + fields;
                               202 with the new job, 200 when `job_id` already exists
    GET  /v1/jobs/{job_id}     the result document; ?wait=SECONDS waits for a terminal status
    GET  /healthz              Redis reachable
    GET  /metrics              Prometheus metrics of this API process

>>> app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import BodyPartReader, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from producer.client import AsyncClient, ImageInput, SubmitRequest
from shared.errors import ImgqError, StorageUnavailableError
from shared.metrics import Metrics
from shared.settings import Settings

MAX_BODY_BYTES = 64 * 1024 * 1024  # 50 MB of images per request, plus JSON/base64 overhead
MAX_WAIT_SECONDS = 300.0
_FIELDS = ("prompt", "model", "detail", "api", "max_output_tokens", "priority", "job_id",
           "max_image_tokens", "dedup", "json_schema", "metadata")  # fmt: skip
CLIENT: web.AppKey[AsyncClient] = web.AppKey("client", AsyncClient)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)


def _bad(message: str, code: str = "invalid_job", status: int = 400) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _image_from_json(item: Any) -> ImageInput:
    if isinstance(item, str):
        return ImageInput(item)
    if not isinstance(item, dict):
        raise ValueError("each image is a string (URL, data URL, base64) or an object")
    value = item.get("url") or item.get("data") or item.get("base64")
    if not isinstance(value, str):
        raise ValueError("an image object needs `url`, `data` or `base64`")
    return ImageInput(value, item.get("detail"))


def _integer(name: str, value: Any) -> int:
    # JSON gives ints, forms give digit strings; 1.5 or true are mistakes, not 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(f"`{name}` must be a whole number, got {value!r}")


def _request_from(fields: dict[str, Any], images: list[ImageInput]) -> SubmitRequest:
    unknown = set(fields) - set(_FIELDS) - {"images"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    opts = {k: fields[k] for k in _FIELDS if fields.get(k) is not None}
    if "prompt" not in opts:
        raise ValueError("`prompt` is required")
    for k in ("prompt", "model", "detail", "api", "priority", "job_id"):
        if k in opts and not isinstance(opts[k], str):
            raise ValueError(f"`{k}` must be a string")
    for k in ("max_output_tokens", "max_image_tokens"):
        if k in opts:
            opts[k] = _integer(k, opts[k])
    if isinstance(opts.get("dedup"), str):
        opts["dedup"] = opts["dedup"].lower() not in ("0", "false", "no")
    for k in ("json_schema", "metadata"):
        if isinstance(opts.get(k), str):
            opts[k] = json.loads(opts[k])
    return SubmitRequest(images=images, **opts)


async def _parse(request: web.Request) -> SubmitRequest:
    if request.content_type == "multipart/form-data":
        fields: dict[str, Any] = {}
        images: list[ImageInput] = []
        # aiohttp caps each part, not their sum: count the total ourselves.
        limit = request.app[MAX_BODY]
        total = 0
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            data = bytes(await part.read(decode=True))
            total += len(data)
            if total > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=total)
            if part.filename is not None or part.name == "image":
                images.append(ImageInput(data))
            elif part.name:
                fields[part.name] = data.decode(part.get_charset(default="utf-8"))
        return _request_from(fields, images)
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    raw_images = body.get("images") or []
    if not isinstance(raw_images, list):
        raise ValueError("`images` must be a list")
    images = [_image_from_json(i) for i in raw_images]
    return _request_from(body, images)


async def submit_job(request: web.Request) -> web.Response:
    try:
        req = await _parse(request)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        return _bad(str(exc))
    client = request.app[CLIENT]
    try:
        # A known job id is answered as it stands (200), never run or counted twice.
        existing = await client.get(req.job_id) if req.job_id else None
        if existing is not None:
            return web.json_response(existing.model_dump(mode="json"), status=200)
        (job_id,) = await client.submit_many([req])
        result = await client.get(job_id)
    except StorageUnavailableError as exc:
        return _bad(exc.message, exc.code, status=503)
    if result is None or result.status != "failed":  # refused at submission: not enqueued
        model = req.model or client.settings.default_model
        request.app[METRICS].jobs_submitted_total.labels(model=model, priority=req.priority).inc()
    doc = result.model_dump(mode="json") if result else {"job_id": job_id, "status": "queued"}
    return web.json_response(doc, status=202)


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    client = request.app[CLIENT]
    wait = request.query.get("wait")
    result = await client.get(job_id)
    if result is None:
        return _bad(f"no job {job_id}", "not_found", status=404)
    if wait is not None:
        try:
            seconds = float(wait)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds):  # a NaN deadline is never reached: the request would hang
            return _bad("`wait` is a number of seconds")
        seconds = min(max(seconds, 0.0), MAX_WAIT_SECONDS)
        if seconds > 0 and not result.done:
            try:
                result = await client.wait(job_id, timeout=seconds)
            except TimeoutError:
                result = await client.get(job_id) or result
    return web.json_response(result.model_dump(mode="json"))


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[CLIENT].get("healthz-probe")
    except ImgqError as exc:
        return _bad(exc.message, exc.code, status=503)
    return web.json_response({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    settings: Settings, *, metrics_: Metrics | None = None, max_body_bytes: int = MAX_BODY_BYTES
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app[CLIENT] = AsyncClient(settings, trusted=False)
    app[METRICS] = metrics_ or Metrics()
    app[MAX_BODY] = max_body_bytes

    async def close(app: web.Application) -> None:
        await app[CLIENT].aclose()

    app.on_cleanup.append(close)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


def run_api(settings: Settings, *, host: str, port: int) -> None:
    web.run_app(create_app(settings), host=host, port=port)
