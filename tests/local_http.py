"""Serve aiohttp apps on free local ports inside the test's event loop: any app, or imgq's API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from producer.api import create_app
from shared.metrics import Metrics
from shared.settings import Settings

ApiFactory = Callable[..., Any]  # (settings, metrics=None, **create_app's options) -> TestClient


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 for the block; yields the port (picked by the OS)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr,no-any-return]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def api_clients() -> AsyncIterator[ApiFactory]:
    """Start the real app on test servers (``api_factory`` fixture); all closed after the block."""
    clients: list[TestClient[Any, Any]] = []

    async def make(settings: Settings, metrics: Metrics | None = None, **kw: Any) -> TestClient:  # type: ignore[type-arg]
        client: TestClient = TestClient(TestServer(create_app(settings, metrics_=metrics, **kw)))  # type: ignore[type-arg]
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for c in clients:
            await c.close()
