"""``/v1/models`` and the simulator's own ``/_sim`` endpoints (stats, reset, config)."""

from __future__ import annotations

import time
from dataclasses import asdict

from aiohttp import web

from shared.vision_tokens import is_known_model, vision_models
from simulator import errors
from simulator.state import STATE, check_auth


async def _models(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    data = [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"}
        for m in [*vision_models(), *request.app[STATE].config.extra_models]
    ]
    return web.json_response({"object": "list", "data": data})


async def _model(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    model = request.match_info["model"]
    if not is_known_model(model) and model not in request.app[STATE].config.extra_models:
        raise errors.model_not_found(model)
    return web.json_response(
        {"id": model, "object": "model", "created": 1700000000, "owned_by": "system"}
    )


async def _stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    snap = state.stats.snapshot(time.monotonic())
    snap["limits"] = {"tpm": state.config.tpm, "rpm": state.config.rpm}
    return web.json_response(snap)


async def _reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.limits.reset()
    state.stats.reset(time.monotonic(), time.time())
    return web.json_response({"ok": True})


async def _config(request: web.Request) -> web.Response:
    cfg = asdict(request.app[STATE].config)
    cfg["api_key"] = None if cfg["api_key"] is None else errors.mask_key(cfg["api_key"])
    return web.json_response(cfg)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model}", _model)
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_post("/_sim/reset", _reset)
    app.router.add_get("/_sim/config", _config)
