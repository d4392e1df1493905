"""``POST /v1/responses`` with the ``image_generation`` tool: one picture as an output item.

The app hands a Responses request here when its ``tools`` include ``{"type": "image_generation",
...}`` (options as the Images API's: size, quality, background, output_format,
output_compression, moderation). The answer's ``output`` holds one ``image_generation_call`` item
(``result``: base64 image, ``revised_prompt``, size, quality, format, background).

Billing and limits, as simulated: ``usage.input_tokens`` are the request's text tokens,
``usage.output_tokens`` the picture's output image tokens (gpt-image-1's table by size and
quality); the mainline model's RPM/TPM buckets are charged both, its images-per-minute bucket one
image. Input images are not simulated on this route (400).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from aiohttp import web

from shared.generation import GenerationOptions, check_options
from shared.image_models import output_tokens, parse_size, resolve_quality, resolve_size
from shared.text_tokens import prompt_tokens
from shared.vision_tokens import is_known_model
from simulator import errors, render
from simulator.image_render import render_image
from simulator.images_state import IMAGES, MODERATION_TRIGGER, admit, moderation_blocked
from simulator.payload import parse_responses
from simulator.state import STATE

TOOL_MODEL = "gpt-image-1"
_TOOL_OPTIONS = ("size", "quality", "background", "output_format", "output_compression",
                 "moderation")  # fmt: skip


def image_tool(body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """(index, tool) of the request's image_generation tool, or None."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and tool.get("type") == "image_generation":
            return i, tool
    return None


def _options(index: int, tool: dict[str, Any]) -> GenerationOptions:
    values = {k: tool[k] for k in _TOOL_OPTIONS if tool.get(k) is not None}
    try:
        return GenerationOptions(model=TOOL_MODEL, **values)
    except ValueError:
        raise errors.bad_request(
            "Invalid image_generation tool options.", param=f"tools[{index}]"
        ) from None


async def answer_image_tool(request: web.Request, body: dict[str, Any]) -> web.Response:
    """The Responses answer of a request using the image_generation tool (auth already checked)."""
    state, images = request.app[STATE], request.app[IMAGES]
    cfg = state.config
    found = image_tool(body)
    assert found is not None
    index, tool = found
    prompt = parse_responses(body)
    if not is_known_model(prompt.model) and prompt.model not in cfg.extra_models:
        raise errors.model_not_found(prompt.model)
    if prompt.images:
        raise errors.bad_request(
            "The simulator does not simulate input images with the image_generation tool.",
            param="input",
        )
    if prompt.stream:
        raise errors.bad_request("The simulator does not stream image generation.", param="stream")
    opts = _options(index, tool)
    text = " ".join(prompt.texts)
    problem = check_options(opts, prompt=text, edit=False)
    if problem is not None:
        param = f"tools[{index}].{problem.param}" if problem.param else None
        raise errors.bad_request(problem.message, param=param, code=problem.code)
    if MODERATION_TRIGGER in text.lower():
        images.moderation_blocked += 1
        raise moderation_blocked()
    n_prompt = prompt_tokens(prompt.texts, [], messages=prompt.messages)
    size = resolve_size(TOOL_MODEL, opts.size)
    quality = resolve_quality(TOOL_MODEL, opts.quality)
    out_tokens = output_tokens(TOOL_MODEL, size, quality)
    now = time.monotonic()
    headers = admit(state, images, prompt.model, 1, n_prompt + out_tokens, now)
    state.stats.admitted(prompt.model, n_prompt + out_tokens, now)
    images.admitted(prompt.model, 1, now)
    jitter = min(cfg.jitter_ms, cfg.latency_ms)
    delay = (cfg.latency_ms + state.rng.uniform(-jitter, jitter)) / 1000
    fmt = opts.output_format or "png"
    w, h = parse_size(size)
    transparent = opts.background == "transparent"
    started = time.monotonic()
    picture = await asyncio.to_thread(
        render_image, f"responses|{TOOL_MODEL}|{text}|{size}|0", w, h, fmt,
        compression=opts.output_compression, transparent=transparent,
    )  # fmt: skip
    await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))
    rid = f"resp_{state.next_id()}"
    payload = render.response_object(rid, prompt.model, None, n_prompt, body)
    payload["status"] = "completed"
    payload["tools"] = [tool]
    payload["output"] = [
        {
            "type": "image_generation_call",
            "id": f"ig_{state.next_id()}",
            "status": "completed",
            "result": base64.b64encode(picture).decode(),
            "revised_prompt": f"A detailed picture of {text.strip()}",
            "size": size,
            "quality": quality,
            "output_format": fmt,
            "background": "transparent" if transparent else "opaque",
        }
    ]
    payload["usage"] = render.responses_usage(n_prompt, out_tokens)
    state.stats.answered(200)
    state.stats.completed_one(n_prompt, out_tokens)
    return web.json_response(payload, headers=headers)
