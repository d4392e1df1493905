"""Generate and edit jobs: reserve fleet capacity, call the Images API, store the images.

The processor hands every ``kind != "analyze"`` job here (its lock, result writes and failure
handling stay the processor's). One attempt: a local slot, a limiter reservation of the exact
tokens (prompt + input images + ``n`` x output tokens by size and quality) and ``n`` images when
the limiter has that dimension, then ``images.generate``/``images.edit`` with the SDK
(``max_retries=0``: retries are ours). Output images are stored content-addressed in the image
store; the result carries their refs (and presigned URLs on S3), sizes, formats, revised
prompts, usage and cost. A moderation refusal is permanent and never retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from openai.types import ImagesResponse

from shared import errors
from shared.catalogue import canonical_model
from shared.generation import GenerationSpec, check_edit_inputs, check_options
from shared.image_models import (
    generation_cost_usd,
    image_model,
    input_image_tokens,
    output_tokens,
    resolve_quality,
    resolve_size,
)
from shared.jobs import Job, Result
from shared.limiter import LimitKey
from shared.prompt_guard import check_prompt
from shared.text_tokens import count_tokens, prompt_tokens
from workers.call_step import Ask, Spend, call_step, fenced_before_call, on_call_error
from workers.deps import WorkerDeps
from workers.generate_responses import images_response, responses_body, responses_cost_usd
from workers.generate_store import store_outputs
from workers.locks import Lease
from workers.openai_call import map_status_error

log = logging.getLogger(__name__)
API_LABEL = "images"


@dataclass
class _Inputs:
    """An edit's input images and mask, read back from the image store."""

    images: list[bytes]
    mask: bytes | None
    image_tokens: int


@dataclass
class _Answer:
    response: ImagesResponse
    latency_seconds: float
    headers: Mapping[str, str]  # read by the limiter's settle (one round trip)


async def run_generation(job: Job, result: Result, lease: Lease, deps: WorkerDeps) -> Result:
    """Run one generate/edit job to success, or raise its typed error (the processor records it)."""
    spec = job.generation or GenerationSpec()
    opts = spec.options
    check_prompt(job.prompt)
    edit = job.kind == "edit"
    # Checked at submit too; checked again here because a broker message is only data.
    problem = check_options(opts, prompt=job.prompt, edit=edit)
    if problem is not None:
        raise errors.InvalidJobError(f"{problem.param}: {problem.message}")
    inputs = await _load_inputs(job, spec, deps) if edit else _Inputs([], None, 0)
    model = image_model(opts.model)
    text_tokens = count_tokens(job.prompt) if model.billing == "tokens" else 0
    out_tokens = opts.n * output_tokens(opts.model, opts.size, opts.quality)
    if spec.route == "responses":  # the mainline model reads the prompt as a message
        text_tokens = prompt_tokens([job.prompt], [])
        out_tokens = output_tokens(opts.model, resolve_size(opts.model, opts.size), opts.quality)
    result.usage.image_tokens = inputs.image_tokens
    result.usage.estimated_input_tokens = text_tokens + inputs.image_tokens
    key = LimitKey(model=canonical_model(job.model), account=deps.account)
    # DALL·E bills no tokens; the limiter takes at least one (its TPM is nominal).
    tokens = max(1, text_tokens + inputs.image_tokens + out_tokens)
    ask = Ask(key, tokens, out_tokens, opts.model, images=opts.n)

    def spend(a: _Answer) -> Spend:
        usage = a.response.usage
        return Spend(
            usage.input_tokens if usage else 1,
            usage.output_tokens if usage else 0,
            a.latency_seconds,
            a.headers,
        )

    before_call = fenced_before_call(deps, lease, result)
    while True:
        try:
            answer = await call_step(
                job, deps, ask, before_call, lambda: _call(job, deps, key, inputs), spend
            )
        except errors.ImgqError as exc:
            await asyncio.sleep(
                await on_call_error(job, deps, ask, API_LABEL, exc, result.attempts)
            )
            continue
        deps.metrics.api_requests_total.labels(model=opts.model, api=API_LABEL, outcome="ok").inc()
        return await _succeeded(job, result, answer, deps)


async def _load_inputs(job: Job, spec: GenerationSpec, deps: WorkerDeps) -> _Inputs:
    images = [await deps.images.get(s.ref) for s in job.images]
    mask = await deps.images.get(spec.mask_ref) if spec.mask_ref else None
    # Decoding up to 16 large images is CPU work: off the event loop, on the worker's pool.
    loop = asyncio.get_running_loop()
    seen, problem = await loop.run_in_executor(
        deps.executor, check_edit_inputs, spec.options.model, images, mask
    )
    if problem is not None:
        raise errors.InvalidImageError(f"{problem.param}: {problem.message}")
    tokens = 0
    if image_model(spec.options.model).billing == "tokens":
        tokens = sum(input_image_tokens(s.width, s.height) for s in seen)
    return _Inputs(images, mask, tokens)


def _params(job: Job) -> dict[str, Any]:
    opts = (job.generation or GenerationSpec()).options
    params: dict[str, Any] = opts.api_params()
    if image_model(opts.model).url_output and opts.response_format is None:
        # We store the bytes anyway: asking for them inline saves a download.
        params["response_format"] = "b64_json"
    return params


def _filename(i: int, data: bytes) -> tuple[str, bytes, str]:
    kind = "png" if data[:4] == b"\x89PNG" else "jpg" if data[:2] == b"\xff\xd8" else "webp"
    mime = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}[kind]
    return (f"image{i}.{kind}", data, mime)


async def _call(job: Job, deps: WorkerDeps, key: LimitKey, inputs: _Inputs) -> _Answer:
    params = _params(job)
    timeout = deps.settings.request_timeout_seconds
    started = time.perf_counter()
    images_api = deps.client.images.with_raw_response
    try:
        if (job.generation or GenerationSpec()).route == "responses":
            http = await deps.client.post(
                "/responses",
                cast_to=httpx2.Response,
                body=responses_body(job.model, job.prompt, params),
                options={"timeout": timeout},
            )
            response = images_response(await http.aread())
            return _Answer(response, time.perf_counter() - started, http.headers)
        if job.kind == "edit":
            files = [_filename(i, data) for i, data in enumerate(inputs.images)]
            extra: dict[str, Any] = {}
            if inputs.mask is not None:
                extra["mask"] = ("mask.png", inputs.mask, "image/png")
            raw = await images_api.edit(
                image=files, prompt=job.prompt, timeout=timeout, **extra, **params
            )
        else:
            raw = await images_api.generate(prompt=job.prompt, timeout=timeout, **params)
        response = raw.parse()
    except openai.APIStatusError as exc:
        await deps.limiter.observe_headers(key, exc.response.headers)
        raise _status_error(exc) from None
    except openai.APITimeoutError:
        if time.perf_counter() - started < timeout * 0.9:
            raise errors.UpstreamConnectionError("connection to the API failed") from None
        raise errors.UpstreamTimeoutError(f"no answer within {timeout:g}s") from None
    except (openai.APIConnectionError, httpx2.TransportError) as exc:
        raise errors.UpstreamConnectionError(f"connection to the API failed: {exc}") from None
    return _Answer(response, time.perf_counter() - started, raw.headers)


def _status_error(exc: openai.APIStatusError) -> errors.ImgqError:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body)
    if isinstance(err, dict) and err.get("code") == "moderation_blocked":
        return errors.ModerationBlockedError(str(err.get("message") or "moderation_blocked"))
    return map_status_error(exc)


async def _succeeded(job: Job, result: Result, answer: _Answer, deps: WorkerDeps) -> Result:
    opts = (job.generation or GenerationSpec()).options
    m = deps.metrics
    items = answer.response.data or []
    # Priced before anything else can fail: a job failing after its paid call (no images, an
    # undecodable one) still carries the bill, and the tenant's budget is settled with it.
    usage = answer.response.usage
    u = result.usage
    if usage is not None:
        u.input_tokens = u.billed_input_tokens = usage.input_tokens
        u.output_tokens = u.billed_output_tokens = usage.output_tokens
        u.image_tokens = usage.input_tokens_details.image_tokens
    text_tokens = u.input_tokens - u.image_tokens
    size = answer.response.size or resolve_size(opts.model, opts.size)
    quality = answer.response.quality or resolve_quality(opts.model, opts.quality)
    if (job.generation or GenerationSpec()).route == "responses":
        result.cost_usd = responses_cost_usd(
            job.model,
            input_tokens=u.input_tokens,
            output_image_tokens=u.output_tokens,
            size=size,
            quality=quality,
        )
    else:
        result.cost_usd = generation_cost_usd(
            opts.model,
            n_images=len(items),
            size=size,
            quality=quality,
            text_tokens=text_tokens,
            image_tokens=u.image_tokens,
            output_image_tokens=u.output_tokens,
        )
    result.timings.api_seconds += answer.latency_seconds
    if not items:
        raise errors.UpstreamServerError("the API answered no images")
    result.images = await store_outputs(items, deps)
    m.api_latency_seconds.labels(model=opts.model, api=API_LABEL).observe(answer.latency_seconds)
    for kind, n in (("input", u.input_tokens), ("output", u.output_tokens)):
        m.tokens_total.labels(model=opts.model, kind=kind).inc(n)
    if result.cost_usd is not None:
        m.cost_usd_total.labels(model=opts.model).inc(result.cost_usd)
    result.status = "succeeded"
    result.error = None
    return result
