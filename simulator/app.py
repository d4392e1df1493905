"""The aiohttp application: OpenAI's answering endpoints, with rate limits and faults.

In-process use (benchmarks)::

    app = create_app(SimConfig(tpm=30_000, rpm=500, latency_ms=0))
    runner = await serve(app, "127.0.0.1", 8400)   # ... later: await runner.cleanup()
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import aiohttp
from aiohttp import web

from shared.catalogue import UNKNOWN_VISION
from shared.text_tokens import encoding, prompt_tokens
from shared.vision_tokens import image_tokens, is_known_model
from simulator import (
    admin,
    batch_api,
    errors,
    files_api,
    image_tool,
    images_api,
    render,
    streaming,
)
from simulator.answers import build_answer
from simulator.config import SimConfig
from simulator.images import ImageInfo, decode_data_url, fetch_image_url, inspect_image
from simulator.payload import Prompt, parse_chat, parse_responses
from simulator.ratelimit import RateLimits
from simulator.state import STATE, SimState, check_auth
from simulator.stats import Stats

_COMMON_HEADERS = {"openai-version": "2020-10-01", "openai-organization": errors.ORG}


async def _read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        raise errors.ApiError(
            413, f"Request body exceeds {_max_body(request.app[STATE].config)} bytes."
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise errors.invalid_json() from None
    if not isinstance(body, dict):
        raise errors.invalid_json()
    return body


async def _load_images(state: SimState, prompt: Prompt) -> list[tuple[ImageInfo, int]]:
    cfg = state.config
    if len(prompt.images) > cfg.max_images:
        raise errors.bad_request(
            f"Too many images in request. Max is {cfg.max_images}.", code="too_many_images"
        )
    out: list[tuple[ImageInfo, int]] = []
    total = 0
    for ref in prompt.images:
        if ref.url.startswith("data:"):
            data = decode_data_url(ref.url, cfg.max_image_bytes, ref.param)
        elif ref.url.startswith(("http://", "https://")):
            if state.session is None:
                state.session = aiohttp.ClientSession()
            data = await fetch_image_url(
                ref.url, state.session, cfg.max_image_bytes, cfg.fetch_timeout_s, ref.param
            )
        else:
            raise errors.invalid_image_url(ref.url, "Invalid image URL:", ref.param)
        total += len(data)
        if total > cfg.max_request_image_bytes:
            raise errors.bad_request(
                f"Total size of images in the request exceeds {cfg.max_request_image_bytes} bytes.",
                code="images_too_large",
            )
        info = inspect_image(data, ref.param)
        rule = prompt.model if is_known_model(prompt.model) else UNKNOWN_VISION  # extra_models
        out.append((info, image_tokens(rule, info.width, info.height, ref.detail)))
    return out


def _headers(rid: str, started: float, extra: dict[str, str]) -> dict[str, str]:
    ms = int((time.monotonic() - started) * 1000)
    return {**_COMMON_HEADERS, **extra, "x-request-id": rid, "openai-processing-ms": str(ms)}


async def _abort(request: web.Request) -> web.StreamResponse:
    # A dropped connection, as a load balancer reset looks to the client: no HTTP answer at all.
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


async def _answer(
    request: web.Request, api: str, state: SimState, rid: str, started: float
) -> web.StreamResponse:
    cfg, stats = state.config, state.stats
    check_auth(request, cfg)
    body = await _read_json(request)
    if api == "responses" and image_tool.image_tool(body) is not None:  # issue 15
        return await image_tool.answer_image_tool(request, body)
    prompt = parse_chat(body) if api == "chat" else parse_responses(body)
    if not is_known_model(prompt.model) and prompt.model not in cfg.extra_models:
        raise errors.model_not_found(prompt.model)
    images = await _load_images(state, prompt)
    n_prompt = prompt_tokens(prompt.texts, [t for _, t in images], messages=prompt.messages)
    now = time.monotonic()
    if cfg.insufficient_quota:
        err = errors.insufficient_quota()
        err.headers.update(state.limits.headers(prompt.model, now))
        raise err
    max_output = prompt.max_output or cfg.default_max_tokens
    admission = state.limits.admit(prompt.model, n_prompt + max_output, now)
    if admission.error is not None:
        admission.error.headers.update(admission.headers)
        raise admission.error
    stats.admitted(prompt.model, n_prompt + max_output, now)
    for info, _ in images:  # billed from admission on, even if the client goes away
        stats.admitted_image(info.sha16)
    # Draw in a fixed order per admitted request, so a seed replays the same faults and delays.
    roll = state.rng.random()
    jitter = min(cfg.jitter_ms, cfg.latency_ms)  # so the mean stays latency_ms and 0 means 0
    delay = (cfg.latency_ms + state.rng.uniform(-jitter, jitter)) / 1000
    if roll < cfg.fail_rate + cfg.reset_rate + cfg.slow_rate:
        fault = (
            "fail"
            if roll < cfg.fail_rate
            else "reset"
            if roll < cfg.fail_rate + cfg.reset_rate
            else "slow"
        )
        stats.faults[fault] += 1
        if fault == "slow":
            delay = cfg.slow_ms / 1000
    else:
        fault = ""
    if delay > 0:
        await asyncio.sleep(delay)
    if fault == "reset":
        return await _abort(request)
    if fault == "fail":
        err = errors.server_error() if state.rng.random() < 0.5 else errors.overloaded()
        raise err
    answer = build_answer(images, prompt.format, max_output)
    headers = _headers(rid, started, admission.headers)
    if prompt.stream:
        resp = await streaming.stream_answer(request, api, prompt, body, answer, n_prompt, headers)
        if resp is None:  # cut halfway (--stream-cut-rate): no answer completed
            return await _abort(request)
    else:
        if api == "chat":
            payload = render.chat_completion(
                f"chatcmpl-{state.next_id()}", prompt.model, answer, n_prompt
            )
        else:
            payload = render.response_object(
                f"resp_{state.next_id()}", prompt.model, answer, n_prompt, body
            )
        resp = web.json_response(payload, headers=headers)
    stats.answered(200)
    stats.completed_one(n_prompt, answer.completion_tokens)
    for info, _ in images:
        stats.saw_image(info.sha16)
    return resp


def _api_handler(api: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        stats = state.stats
        started = time.monotonic()
        rid = f"req_{state.next_id()}"
        stats.enter()
        try:
            return await _answer(request, api, state, rid, started)
        except errors.ApiError as err:
            stats.answered(err.status, err.stats_code)
            return web.json_response(
                err.body(), status=err.status, headers=_headers(rid, started, err.headers)
            )
        finally:
            stats.leave()

    return handler


@web.middleware
async def _errors_mw(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except errors.ApiError as err:
        return web.json_response(err.body(), status=err.status, headers=err.headers)


async def _warm_up(app: web.Application) -> None:
    # Load tiktoken's BPE before the first request, not during it (takes ~0.5 s once).
    await asyncio.get_running_loop().run_in_executor(None, encoding)


async def _close_session(app: web.Application) -> None:
    session = app[STATE].session
    if session is not None:
        await session.close()


def _max_body(config: SimConfig) -> int:
    # Base64 inflates by 4/3; leave room for the JSON around the images.
    return config.max_request_image_bytes * 4 // 3 + 8 * 1024 * 1024


def create_app(config: SimConfig) -> web.Application:
    """A fresh simulator app; nothing runs until it is served."""
    app = web.Application(client_max_size=_max_body(config), middlewares=[_errors_mw])
    app[STATE] = SimState(
        config=config,
        limits=RateLimits(tpm=config.tpm, rpm=config.rpm),
        stats=Stats(time.monotonic(), time.time()),
        rng=random.Random(config.seed),
    )
    app.router.add_post("/v1/chat/completions", _api_handler("chat"))
    app.router.add_post("/v1/responses", _api_handler("responses"))
    admin.add_routes(app)
    files_api.add_routes(app)  # Files + Batch APIs (issue 14)
    batch_api.add_routes(app, _load_images)
    images_api.add_routes(app, config.ipm)  # Images API (issue 15)
    app.on_startup.append(_warm_up)
    app.on_cleanup.append(_close_session)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on ``host:port`` in the running loop; stop it with ``runner.cleanup()``."""
    # handler_cancellation: a client that gives up (e.g. on a --slow-rate answer) frees its slot.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    return runner
