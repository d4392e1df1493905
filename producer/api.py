"""The HTTP API (aiohttp): submit jobs as JSON or multipart uploads, read or wait for results.

    POST /v1/jobs              JSON {"images": [{"url"|"data": ..., "detail": "auto"}], "prompt": ...}
                               or multipart/form-data: files `image` (repeatable) + fields;
                               202 with the new job, 200 when `job_id` already exists
    GET  /v1/jobs/{job_id}     the result document; ?wait=SECONDS waits for a terminal status
    GET  /healthz              Redis reachable
    GET  /metrics              Prometheus metrics of this API process
    POST /v1/images/generations, /v1/images/edits, GET /v1/jobs/{id}/images/{i}
                               image generation jobs (producer/api_images.py)

Bounded whatever the callers do: one process holds at most ``api_redis_connections`` Redis
connections (a blocking pool; callers queue for it), every ``?wait`` shares ONE subscription
(``shared.storage.wait_hub``), a body must arrive within ``api_body_timeout_seconds`` (408) and
within ``max_body_bytes`` (413).

>>> app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from producer import api_images, api_service
from producer.api_body import BodyTimeoutError, read_submit
from producer.client import AsyncClient
from shared.errors import StorageUnavailableError
from shared.jobs import Result
from shared.metrics import Metrics
from shared.settings import Settings
from shared.storage import build_stores
from shared.storage.wait_hub import UnreadableResultError, WaitHub

# Multipart: 50 MB of images plus the form fits. JSON carries images as base64 (x4/3), so a JSON
# body holds about 48 MB of images, under max_job_image_bytes: send big jobs as multipart.
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_WAIT_SECONDS = 300.0
POOL_TIMEOUT_SECONDS = 20.0  # a request waiting this long for a Redis connection gets a 503
CLIENT: web.AppKey[AsyncClient] = web.AppKey("client", AsyncClient)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout", float)
REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
HUB: web.AppKey[WaitHub] = web.AppKey("hub", WaitHub)


def _bad(message: str, code: str = "invalid_job", status: int = 400) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _unreadable(exc: UnreadableResultError) -> web.Response:
    # Stored by an older or buggy writer (e.g. metadata nested past the parser's limits): say so
    # plainly; it will not change by asking again.
    return _bad(str(exc), "result_unreadable", status=502)


async def _get(request: web.Request, job_id: str) -> Result | None:
    try:
        return await request.app[CLIENT].get(job_id)
    except ValueError as exc:  # pydantic's ValidationError on a stored document
        raise UnreadableResultError(
            f"the stored result of job {job_id!r} cannot be read ({type(exc).__name__})"
        ) from None


async def submit_job(request: web.Request) -> web.Response:
    app = request.app
    try:
        req = await read_submit(request, max_body=app[MAX_BODY], timeout=app[BODY_TIMEOUT])
    except BodyTimeoutError as exc:
        resp = _bad(str(exc), "request_timeout", status=408)
        resp.force_close()  # the rest of a trickled body is not worth waiting for
        return resp
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        return _bad(str(exc))
    client = app[CLIENT]
    try:
        # A known job id is answered as it stands (200), never run or counted twice.
        existing = await _get(request, req.job_id) if req.job_id else None
        if existing is not None:
            return web.json_response(existing.model_dump(mode="json"), status=200)
        (job_id,) = await client.submit_many([req])
        result = await _get(request, job_id)
    except StorageUnavailableError as exc:
        return _bad(exc.message, exc.code, status=503)
    except UnreadableResultError as exc:
        return _unreadable(exc)
    if result is None or result.status != "failed":  # refused at submission: not enqueued
        model = req.model or client.settings.default_model
        app[METRICS].jobs_submitted_total.labels(model=model, priority=req.priority).inc()
    doc = result.model_dump(mode="json") if result else {"job_id": job_id, "status": "queued"}
    return web.json_response(doc, status=202)


def _wait_seconds(raw: str) -> float | None:
    """``?wait=`` as seconds within 0..MAX_WAIT_SECONDS; None when it is not a finite number."""
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if not math.isfinite(seconds):  # a NaN deadline is never reached: the request would hang
        return None
    return min(max(seconds, 0.0), MAX_WAIT_SECONDS)


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    wait = request.query.get("wait")
    seconds = 0.0
    if wait is not None:
        parsed = _wait_seconds(wait)
        if parsed is None:
            return _bad("`wait` is a number of seconds")
        seconds = parsed
    try:
        result = await _get(request, job_id)
        if result is None:
            return _bad(f"no job {job_id}", "not_found", status=404)
        if seconds > 0 and not result.done:
            result = await request.app[HUB].wait(job_id, seconds) or await _get(request, job_id)
            if result is None:  # deleted while waiting
                return _bad(f"no job {job_id}", "not_found", status=404)
    except StorageUnavailableError as exc:
        return _bad(exc.message, exc.code, status=503)
    except UnreadableResultError as exc:
        return _unreadable(exc)
    return web.json_response(result.model_dump(mode="json"))


async def healthz(request: web.Request) -> web.Response:
    # A PING, not a read of some job id: no caller can make the probe fail by creating a job.
    try:
        await request.app[REDIS].ping()  # type: ignore[misc]
    except (RedisError, OSError) as exc:
        err = StorageUnavailableError(f"Redis is not reachable: {type(exc).__name__}")
        return _bad(err.message, err.code, status=503)
    return web.json_response({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _redis(settings: Settings) -> aioredis.Redis:
    """A fixed pool: under any load the process holds at most this many Redis connections."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.require_redis_url(),
        max_connections=max(2, settings.api_redis_connections),
        timeout=POOL_TIMEOUT_SECONDS,
    )
    return aioredis.Redis.from_pool(pool)


def create_app(
    settings: Settings,
    *,
    metrics_: Metrics | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout: float | None = None,
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    r = _redis(settings)
    app[REDIS] = r
    app[CLIENT] = AsyncClient(settings, trusted=False, redis=r)
    _, results, events = build_stores(settings, r)
    app[HUB] = WaitHub(results, events)
    app[METRICS] = metrics_ or Metrics()
    app[MAX_BODY] = max_body_bytes
    app[BODY_TIMEOUT] = settings.api_body_timeout_seconds if body_timeout is None else body_timeout

    async def close(app: web.Application) -> None:
        await app[HUB].aclose()
        await app[CLIENT].aclose()
        await app[REDIS].aclose()

    app.on_cleanup.append(close)
    # Issue 11: keys, tenants, the strict edge; /v1/jobs routes scoped to the caller's tenant
    # (producer/api_jobs.py, which replaced submit_job/get_job here).
    api_service.install(app, settings, redis=r, client=app[CLIENT], hub=app[HUB],
                        metrics=app[METRICS], max_body=max_body_bytes,
                        body_timeout=app[BODY_TIMEOUT])  # fmt: skip
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    api_images.add_routes(  # image generation and edits (issue 15)
        app, app[CLIENT], max_body=max_body_bytes, body_timeout=app[BODY_TIMEOUT]
    )
    return app


def run_api(settings: Settings, *, host: str, port: int) -> None:
    web.run_app(create_app(settings), host=host, port=port)


__all__ = ["create_app", "run_api"]
