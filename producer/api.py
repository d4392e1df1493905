"""The HTTP API (aiohttp): the app, its shared parts and the probes; routes live in modules.

    POST /v1/jobs              JSON {"images": [{"url"|"data": ..., "detail": "auto"}], "prompt": ...}
                               or multipart/form-data: files `image` (repeatable) + fields;
                               202 with the new job, 200 when `job_id` already exists
    GET  /v1/jobs/{job_id}     the result document; ?wait=SECONDS waits for a terminal status
    GET  /healthz              Redis reachable
    GET  /metrics              Prometheus metrics of this API process
    POST /v1/images/generations, /v1/images/edits, GET /v1/jobs/{id}/images/{i}
                               image generation jobs (producer/api_images.py)

The /v1/jobs routes (tenant-scoped, issue 11) are in producer/api_jobs.py, the body reading in
producer/api_body.py, keys and the edge in producer/api_service.py.

Bounded whatever the callers do: one process holds at most ``api_redis_connections`` Redis
connections (a blocking pool; callers queue for it), every ``?wait`` shares ONE subscription
(``shared.storage.wait_hub``), a body must arrive within ``api_body_timeout_seconds`` (408) and
within ``max_body_bytes`` (413).

>>> app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))   # doctest: +SKIP
"""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from producer import api_images, api_service
from producer.client import AsyncClient
from shared.errors import StorageUnavailableError
from shared.metrics import Metrics
from shared.settings import Settings
from shared.storage import build_stores
from shared.storage.wait_hub import WaitHub

# Multipart: 50 MB of images plus the form fits. JSON carries images as base64 (x4/3), so a JSON
# body holds about 48 MB of images, under max_job_image_bytes: send big jobs as multipart.
MAX_BODY_BYTES = 64 * 1024 * 1024
POOL_TIMEOUT_SECONDS = 20.0  # a request waiting this long for a Redis connection gets a 503
CLIENT: web.AppKey[AsyncClient] = web.AppKey("client", AsyncClient)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout", float)
REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
HUB: web.AppKey[WaitHub] = web.AppKey("hub", WaitHub)


def _bad(message: str, code: str = "invalid_job", status: int = 400) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


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
