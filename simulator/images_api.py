"""``POST /v1/images/generations`` and ``/v1/images/edits``: the Images API, simulated.

Answers carry real PNG/JPEG/WebP bytes, deterministic per prompt (and input images), at the size
asked: ``b64_json`` for gpt-image-1 (with ``usage``: text/image input tokens, output image tokens
from shared.image_models), ``url`` or ``b64_json`` for DALL·E per ``response_format`` (URLs served
by the simulator at ``/_sim/images/<id>``), ``revised_prompt`` for dall-e-3. Options are checked
with shared.generation, as the API checks them (400 with OpenAI's error shape).

Limits: the usual RPM/TPM buckets (gpt-image-1 is charged input + output tokens) plus an
images-per-minute bucket per model (``--ipm``), with ``x-ratelimit-*-images`` headers and 429s.

Moderation: a prompt containing ``images_state.MODERATION_TRIGGER`` is refused with a 400
``moderation_blocked``, as OpenAI's safety system refuses a prompt.

Seen images are counted at ``GET /_sim/images/stats`` (``max_images_in_any_60s`` per model);
``POST /_sim/images/reset`` refills the IPM buckets and clears the counts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from shared.generation import GenerationOptions, OptionProblem, check_edit_inputs, check_options
from shared.image_models import (
    image_model,
    input_image_tokens,
    output_tokens,
    parse_size,
    resolve_quality,
    resolve_size,
)
from shared.text_tokens import count_tokens
from simulator import errors
from simulator.image_render import render_image
from simulator.images_state import (
    IMAGES,
    MODERATION_TRIGGER,
    ImagesState,
    admit,
    moderation_blocked,
)
from simulator.state import STATE, SimState, check_auth

DEFAULT_MODEL = "dall-e-2"  # the API's default when a request names no model
_URL_CACHE = 256  # images kept for URL answers (DALL·E), oldest dropped first
_INT_PARAMS = ("n", "output_compression")


@dataclass
class ImageCall:
    """One parsed request: options, prompt, and for edits the input images and mask."""

    opts: GenerationOptions
    prompt: str
    images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None


def _bad(problem: OptionProblem) -> errors.ApiError:
    return errors.bad_request(problem.message, param=problem.param, code=problem.code)


def _options(fields: dict[str, Any]) -> GenerationOptions:
    values: dict[str, Any] = {}
    for name in GenerationOptions.model_fields:
        value = fields.get(name)
        if value is None:
            continue
        if name in _INT_PARAMS:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise errors.bad_request(
                    f"Invalid type for '{name}': expected an integer, but got a string instead.",
                    param=name,
                    code="invalid_type",
                ) from None
        elif not isinstance(value, str):
            raise errors.bad_request(
                f"Invalid type for '{name}': expected a string.", param=name, code="invalid_type"
            )
        values[name] = value
    values.setdefault("model", DEFAULT_MODEL)
    return GenerationOptions(**values)


async def _parse_generation(request: web.Request) -> ImageCall:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise errors.invalid_json() from None
    if not isinstance(body, dict):
        raise errors.invalid_json()
    prompt = body.get("prompt")
    return ImageCall(_options(body), prompt if isinstance(prompt, str) else "")


async def _parse_edit(request: web.Request) -> ImageCall:
    if not request.content_type.startswith("multipart/"):
        raise errors.bad_request(
            "This endpoint expects multipart/form-data with the image(s) as files.",
            code="invalid_request",
        )
    form = await request.post()
    images: list[bytes] = []
    for key in ("image", "image[]"):
        for item in form.getall(key, []):
            if isinstance(item, web.FileField):
                images.append(item.file.read())
            else:
                raise errors.bad_request(
                    f"Invalid '{key}': expected a file upload.", param="image", code="invalid_type"
                )
    mask_field = form.get("mask")
    mask = mask_field.file.read() if isinstance(mask_field, web.FileField) else None
    texts = {k: v for k, v in form.items() if isinstance(v, str)}
    prompt = texts.get("prompt", "")
    return ImageCall(_options(texts), prompt, images, mask)


def _render_all(call: ImageCall, size: str, fmt: str, seed: str) -> list[bytes]:
    w, h = parse_size(size)
    transparent = call.opts.background == "transparent"
    return [
        render_image(
            f"{seed}|{i}",
            w,
            h,
            fmt,
            compression=call.opts.output_compression,
            transparent=transparent,
        )
        for i in range(call.opts.n)
    ]


async def _answer(request: web.Request, edit: bool) -> web.Response:
    state = request.app[STATE]
    images_state = request.app[IMAGES]
    cfg = state.config
    check_auth(request, cfg)
    call = await (_parse_edit(request) if edit else _parse_generation(request))
    problem = check_options(call.opts, prompt=call.prompt, edit=edit)
    if problem is not None:
        raise _bad(problem)
    opts, spec = call.opts, image_model(call.opts.model)
    image_tokens = 0
    if edit:
        seen, problem = await asyncio.to_thread(
            check_edit_inputs, opts.model, call.images, call.mask
        )
        if problem is not None:
            raise _bad(problem)
        if spec.billing == "tokens":
            image_tokens = sum(input_image_tokens(s.width, s.height) for s in seen)
    text_tokens = count_tokens(call.prompt) if spec.billing == "tokens" else 0
    out_tokens = opts.n * output_tokens(
        opts.model, resolve_size(opts.model, opts.size), opts.quality
    )
    # Refused before admission: a refusal counts against no limit (imgq releases it uncounted).
    if MODERATION_TRIGGER in call.prompt.lower():
        images_state.moderation_blocked += 1
        raise moderation_blocked()
    now = time.monotonic()
    headers = admit(
        state, images_state, opts.model, opts.n, text_tokens + image_tokens + out_tokens, now
    )
    state.stats.admitted(opts.model, text_tokens + image_tokens + out_tokens, now)
    images_state.admitted(opts.model, opts.n, now)
    jitter = min(cfg.jitter_ms, cfg.latency_ms)
    delay = (cfg.latency_ms + state.rng.uniform(-jitter, jitter)) / 1000
    if state.rng.random() < cfg.fail_rate:
        await asyncio.sleep(delay)
        raise errors.server_error()
    size = resolve_size(opts.model, opts.size)
    fmt = opts.output_format or "png"
    seed = "|".join(
        [opts.model, call.prompt, size, *(hashlib.sha256(b).hexdigest() for b in call.images)]
    )
    started = time.monotonic()
    pictures = await asyncio.to_thread(_render_all, call, size, fmt, seed)
    await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))
    data: list[dict[str, Any]] = []
    for pic in pictures:
        item: dict[str, Any] = {}
        if spec.url_output and (opts.response_format or "url") == "url":
            item["url"] = _keep_for_url(request, images_state, state, pic, fmt)
        else:
            item["b64_json"] = base64.b64encode(pic).decode()
        if spec.revised_prompt:
            item["revised_prompt"] = f"A detailed, vivid picture of {call.prompt.strip()}"
        data.append(item)
    payload: dict[str, Any] = {"created": int(time.time()), "data": data}
    if spec.billing == "tokens":
        payload.update(
            background="transparent" if opts.background == "transparent" else "opaque",
            output_format=fmt,
            quality=resolve_quality(opts.model, opts.quality),
            size=size,
            usage={
                "input_tokens": text_tokens + image_tokens,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
                "output_tokens": out_tokens,
                "total_tokens": text_tokens + image_tokens + out_tokens,
            },
        )
    return web.json_response(payload, headers=headers)


def _keep_for_url(
    request: web.Request, images: ImagesState, state: SimState, data: bytes, fmt: str
) -> str:
    image_id = f"img-{state.next_id()}"
    images.urls[image_id] = (data, f"image/{fmt}")
    while len(images.urls) > _URL_CACHE:
        images.urls.popitem(last=False)
    return f"{request.scheme}://{request.host}/_sim/images/{image_id}"


def _handler(edit: bool) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        state.stats.enter()
        started = time.monotonic()
        rid = f"req_{state.next_id()}"
        try:
            resp = await _answer(request, edit)
            resp.headers["x-request-id"] = rid
            state.stats.answered(200)
            return resp
        except errors.ApiError as err:
            if err.status == 429:
                request.app[IMAGES].rate_limited += 1
            state.stats.answered(err.status, err.stats_code)
            ms = int((time.monotonic() - started) * 1000)
            headers = {**err.headers, "x-request-id": rid, "openai-processing-ms": str(ms)}
            return web.json_response(err.body(), status=err.status, headers=headers)
        finally:
            state.stats.leave()

    return handler


async def _served_image(request: web.Request) -> web.Response:
    kept = request.app[IMAGES].urls.get(request.match_info["image_id"])
    if kept is None:
        raise web.HTTPNotFound()
    data, content_type = kept
    return web.Response(body=data, content_type=content_type)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[IMAGES].snapshot())


async def _reset(request: web.Request) -> web.Response:
    request.app[IMAGES].reset()
    return web.json_response({"ok": True})


def add_routes(app: web.Application, ipm: int) -> None:
    """Register the Images API (and its image URLs and stats) on the simulator app."""
    app[IMAGES] = ImagesState(ipm=ipm)
    app.router.add_post("/v1/images/generations", _handler(edit=False))
    app.router.add_post("/v1/images/edits", _handler(edit=True))
    app.router.add_get("/_sim/images/stats", _stats)
    app.router.add_post("/_sim/images/reset", _reset)
    app.router.add_get("/_sim/images/{image_id}", _served_image)
