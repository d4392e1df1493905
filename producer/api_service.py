"""The API as a service teams share (issue 11): keys, tenants, the strict edge, job routes.

``install`` is called once by ``producer.api.create_app``: it adds the edge and auth
middlewares, the tenant-scoped job routes, ``/readyz``, the OpenAPI document and its docs page,
the per-tenant spend metric and, when ``IMGQ_API_METRICS_PORT`` is set, ``/metrics`` on its own
port without keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from redis.exceptions import RedisError

from producer import api_jobs, openapi
from producer.api_auth import auth_middleware
from producer.api_edge import (
    REQUEST_ID,
    REQUEST_ID_HEADER,
    RID_KEY,
    edge_middleware,
    error_response,
    install_log_filter,
)
from producer.api_scope import scope_middleware
from producer.api_submit import ApiDeps
from producer.client import AsyncClient
from producer.tenant_jobs import TenantJobs
from shared.budget import Budgets
from shared.catalogue import catalogue_for
from shared.metrics import Metrics
from shared.settings import Settings
from shared.storage import build_stores
from shared.storage.wait_hub import WaitHub
from shared.tenants import KeyStore

log = logging.getLogger("imgq.api")
SPEND_REFRESH_SECONDS = 15.0
_GAUGES: weakref.WeakKeyDictionary[CollectorRegistry, Gauge] = weakref.WeakKeyDictionary()
METRICS_RUNNER: web.AppKey[web.AppRunner] = web.AppKey("imgq_metrics_runner", web.AppRunner)


def spend_gauge(registry: CollectorRegistry) -> Gauge:
    """``imgq_tenant_spend_usd{tenant,period}``: today's / this month's spend, reservations
    included, plus ``period="billed"``: settled bills in total. Tenants: the key store's."""
    if registry not in _GAUGES:
        _GAUGES[registry] = Gauge(
            "imgq_tenant_spend_usd",
            "Spend per tenant in USD: day, month (reservations included) and billed (settled).",
            ("tenant", "period"),
            registry=registry,
        )
    return _GAUGES[registry]


async def refresh_spend(deps: ApiDeps, gauge: Gauge) -> None:
    if deps.keys is None:
        return
    day: dict[str, float] = {}
    month: dict[str, float] = {}
    for key in await deps.keys.list():
        d, m = await deps.budgets.spent(key)
        day[key.tenant] = day.get(key.tenant, 0.0) + d
        month[key.tenant] = month.get(key.tenant, 0.0) + m
    billed = await deps.budgets.billed_by_tenant(sorted(day))
    for tenant in day:
        gauge.labels(tenant=tenant, period="day").set(day[tenant])
        gauge.labels(tenant=tenant, period="month").set(month[tenant])
        gauge.labels(tenant=tenant, period="billed").set(billed[tenant])


async def readyz(request: web.Request) -> web.StreamResponse:
    try:
        await request.app[api_jobs.DEPS].redis.ping()  # type: ignore[misc]
    except (RedisError, OSError):
        return error_response(503, "storage_unavailable", "Redis is not reachable")
    return web.json_response({"ok": True})


async def _on_prepare(request: web.Request, resp: web.StreamResponse) -> None:
    # Streams (SSE) send their headers before the edge middleware sees the answer.
    if REQUEST_ID_HEADER not in resp.headers:
        resp.headers[REQUEST_ID_HEADER] = request.get(RID_KEY) or REQUEST_ID.get()


def install(
    app: web.Application,
    settings: Settings,
    *,
    redis: aioredis.Redis,
    client: AsyncClient,
    hub: WaitHub,
    metrics: Metrics,
    max_body: int,
    body_timeout: float,
) -> None:
    """Add the middlewares and routes of issue 11 to the app ``create_app`` is building."""
    _, results, events = build_stores(settings, redis)
    keys = KeyStore(redis) if settings.api_auth == "on" else None
    deps = ApiDeps(
        settings=settings,
        client=client,
        redis=redis,
        results=results,
        events=events,
        hub=hub,
        keys=keys,
        budgets=Budgets(redis),
        jobs=TenantJobs(redis, ttl_seconds=settings.result_ttl_seconds),
        metrics=metrics,
        catalogue=catalogue_for(settings),
        max_body=max_body,
        body_timeout=body_timeout,
    )
    app[api_jobs.DEPS] = deps
    app.middlewares.append(edge_middleware(settings.api_cors_origins))
    app.middlewares.append(auth_middleware(keys))
    app.middlewares.append(scope_middleware)
    app.on_response_prepare.append(_on_prepare)
    api_jobs.add_routes(app)
    openapi.add_routes(app)
    app.router.add_get("/readyz", readyz)
    gauge = spend_gauge(metrics.registry)
    tasks: list[asyncio.Task[None]] = []

    async def spend_loop() -> None:
        while True:
            with contextlib.suppress(RedisError, OSError, ValueError):
                await refresh_spend(deps, gauge)
            await asyncio.sleep(SPEND_REFRESH_SECONDS)

    async def start(app: web.Application) -> None:
        install_log_filter()
        if keys is None:
            log.warning(
                "IMGQ_API_AUTH=off: NO API KEYS ARE CHECKED. Anyone who reaches this port can "
                "spend the OpenAI budget and read every job. For local use only."
            )
        tasks.append(asyncio.get_running_loop().create_task(spend_loop()))
        if settings.api_metrics_port is not None:
            app[METRICS_RUNNER] = await _serve_metrics(deps, gauge, settings)

    async def stop(app: web.Application) -> None:
        for task in tasks:
            task.cancel()
        if METRICS_RUNNER in app:
            await app[METRICS_RUNNER].cleanup()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


async def _serve_metrics(deps: ApiDeps, gauge: Gauge, settings: Settings) -> web.AppRunner:
    async def metrics(request: web.Request) -> web.Response:
        with contextlib.suppress(RedisError, OSError, ValueError):
            await refresh_spend(deps, gauge)
        body = generate_latest(deps.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    side = web.Application()
    side.router.add_get("/metrics", metrics)
    runner = web.AppRunner(side, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.api_metrics_host, settings.api_metrics_port).start()
    return runner


__all__ = ["install", "refresh_spend", "spend_gauge"]
