"""The OpenAI call path: request shapes for both APIs, one call, SDK errors mapped to ours.

Images always go as base64 data URLs (portable across OpenAI-compatible servers) in proper image
content parts, never pasted into the text.

>>> build_chat_request("gpt-4o", "What is it?", [("data:image/png;base64,AAAA", "low")], 50, None)["messages"][0]["content"][1]
{'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,AAAA', 'detail': 'low'}}
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import jsonschema
import openai

from shared import errors
from shared.limiter.headers import retry_after_seconds

ImagePart = tuple[str, str]  # (data URL, detail)
HeadersHook = Callable[[Mapping[str, str]], Awaitable[None]]
_IMAGE_CODES = {"invalid_image", "invalid_image_format", "invalid_image_url", "image_parse_error"}


@dataclass
class ApiOutcome:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_seconds: float
    headers: Mapping[str, str] = field(default_factory=dict)


def build_chat_request(
    model: str,
    prompt: str,
    images: Sequence[ImagePart],
    max_output_tokens: int,
    json_schema: dict[str, Any] | None,
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    content += [{"type": "image_url", "image_url": {"url": u, "detail": d}} for u, d in images]
    req: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_completion_tokens": max_output_tokens,
    }
    if json_schema is not None:
        req["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "result", "schema": json_schema, "strict": True},
        }
    return req


def build_responses_request(
    model: str,
    prompt: str,
    images: Sequence[ImagePart],
    max_output_tokens: int,
    json_schema: dict[str, Any] | None,
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": prompt}]
    content += [{"type": "input_image", "image_url": u, "detail": d} for u, d in images]
    req: dict[str, Any] = {
        "model": model,
        "input": [{"role": "user", "content": content}],
        "max_output_tokens": max_output_tokens,
    }
    if json_schema is not None:
        req["text"] = {
            "format": {
                "type": "json_schema",
                "name": "result",
                "schema": json_schema,
                "strict": True,
            }
        }
    return req


def responses_output_text(data: dict[str, Any]) -> str:
    """A Responses API ``response``'s text: like the SDK's ``output_text``, the join of every
    output_text part of every message."""
    return "".join(
        part.get("text", "")
        for item in data.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    )


def _read_answer(api: str, body: bytes) -> tuple[str, int, int]:
    """(output text, prompt tokens, completion tokens) from a 200 answer of either API."""
    try:
        data = json.loads(body)
        usage = data.get("usage") or {}
        if api == "chat":
            choices = data.get("choices") or [{}]
            text = (choices[0].get("message") or {}).get("content") or ""
            return text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        text = responses_output_text(data)
        return text, int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    except (ValueError, AttributeError, TypeError, IndexError) as exc:
        raise errors.UpstreamServerError(
            f"the API answered 200 with a malformed body: {exc}"
        ) from None


def map_status_error(exc: openai.APIStatusError) -> errors.ImgqError:
    """Turn an HTTP error answer into one of our typed errors (message kept, secrets never added)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    api_code = str(err.get("code") or "") if isinstance(err, dict) else ""
    message = str(err.get("message") or exc.message) if isinstance(err, dict) else exc.message
    status = exc.status_code
    if status == 429:
        if api_code == "insufficient_quota":
            return errors.InsufficientQuotaError(message)
        if "request too large" in message.lower():
            return errors.RequestTooLargeError(message)
        retry_after = retry_after_seconds(exc.response.headers)
        return errors.RateLimitedError(message, retry_after=retry_after)
    if status >= 500:
        return errors.UpstreamServerError(f"HTTP {status}: {message}")
    if status == 408:
        return errors.UpstreamTimeoutError(f"HTTP 408: {message}")
    if status == 409:
        return errors.UpstreamServerError(f"HTTP 409: {message}")
    if status == 401:
        return errors.AuthenticationError(message)
    if status == 403:
        return errors.PermissionDeniedError(message)
    if status == 404:
        return errors.NotFoundError(message)
    if api_code in _IMAGE_CODES:
        return errors.InvalidImageError(message, code=api_code)
    return errors.BadRequestError(f"HTTP {status}: {message}", code=api_code or None)


def timeout_error(exc: Exception, started: float, timeout: float) -> errors.ImgqError:
    """A transport timeout as our error: the aiohttp transport reports a dropped connection
    ("Server disconnected") as a ConnectTimeout, so a "timeout" long before the deadline is
    really a connection error."""
    if time.perf_counter() - started < timeout * 0.9:
        return errors.UpstreamConnectionError(f"connection to the API failed: {exc}")
    return errors.UpstreamTimeoutError(f"no answer within {timeout:g}s")


def parse_structured_output(text: str, schema: dict[str, Any]) -> Any:
    try:
        value = json.loads(text)
        jsonschema.validate(value, schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        raise errors.OutputParseError(
            f"structured output does not match the schema: {exc}"
        ) from exc
    return value


async def call_openai(
    client: openai.AsyncOpenAI,
    *,
    api: str,
    model: str,
    prompt: str,
    images: Sequence[ImagePart],
    max_output_tokens: int,
    json_schema: dict[str, Any] | None = None,
    timeout: float,
    on_headers: HeadersHook | None = None,
) -> ApiOutcome:
    """One API call; raises a typed ImgqError. ``on_headers`` sees every answer's headers (429 too)."""
    builder = build_chat_request if api == "chat" else build_responses_request
    request = builder(model, prompt, images, max_output_tokens, json_schema)
    started = time.perf_counter()
    try:
        # The request is already in wire format: `client.post` (the SDK's documented way to send
        # a raw body) skips `create()`'s recursive re-walk of the body, base64 images included,
        # about a third of the CPU of a call. Errors are still raised as the SDK's typed errors.
        raw = await client.post(
            "/chat/completions" if api == "chat" else "/responses",
            cast_to=httpx2.Response,
            body=request,
            options={"timeout": timeout},
        )
        headers: Mapping[str, str] = raw.headers
        text, prompt_tokens, completion_tokens = _read_answer(api, await raw.aread())
    except openai.APIStatusError as exc:
        if on_headers is not None:
            await on_headers(exc.response.headers)
        raise map_status_error(exc) from None
    except openai.APITimeoutError as exc:
        raise timeout_error(exc, started, timeout) from None
    except (openai.APIConnectionError, httpx2.TransportError) as exc:
        raise errors.UpstreamConnectionError(f"connection to the API failed: {exc}") from None
    latency = time.perf_counter() - started
    if on_headers is not None:
        await on_headers(headers)
    return ApiOutcome(text, prompt_tokens, completion_tokens, latency, headers)
