"""Request shapes for both APIs, and call_openai through the worker's real client (AsyncOpenAI on
the aiohttp transport, SDK retries off) against the simulator."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import openai
import pytest
from PIL import Image

from shared import errors
from shared.embedded_redis import free_port
from tests.conftest import Sim
from tests.workers.conftest import KEY
from workers.openai_call import (
    build_chat_request,
    build_responses_request,
    call_openai,
    parse_structured_output,
)

SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string"}, "orientation": {"type": "string"}},
    "required": ["colour", "orientation"],
    "additionalProperties": False,
}
IMAGES = [("data:image/png;base64,AAAA", "low"), ("data:image/jpeg;base64,BBBB", "high")]


# -- shapes ---------------------------------------------------------------------------------------
def test_chat_request_shape() -> None:
    assert build_chat_request("gpt-4o", "What?", IMAGES, 50, None) == {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What?"},
                    {"type": "image_url", "image_url": {"url": IMAGES[0][0], "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": IMAGES[1][0], "detail": "high"}},
                ],
            }
        ],
        "max_completion_tokens": 50,
    }


def test_chat_request_with_schema() -> None:
    req = build_chat_request("gpt-4o", "What?", IMAGES[:1], 50, SCHEMA)
    assert req["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "result", "schema": SCHEMA, "strict": True},
    }
    assert "text" not in req


def test_responses_request_shape() -> None:
    assert build_responses_request("gpt-4o", "What?", IMAGES, 50, None) == {
        "model": "gpt-4o",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What?"},
                    {"type": "input_image", "image_url": IMAGES[0][0], "detail": "low"},
                    {"type": "input_image", "image_url": IMAGES[1][0], "detail": "high"},
                ],
            }
        ],
        "max_output_tokens": 50,
    }


def test_responses_request_with_schema() -> None:
    req = build_responses_request("gpt-4o", "What?", IMAGES[:1], 50, SCHEMA)
    assert req["text"] == {
        "format": {"type": "json_schema", "name": "result", "schema": SCHEMA, "strict": True}
    }
    assert "response_format" not in req


def test_images_never_go_into_the_text() -> None:
    for builder in (build_chat_request, build_responses_request):
        text = json.dumps(builder("m", "What?", IMAGES, 5, None))
        parts = json.loads(text)
        first = (parts.get("messages") or parts.get("input"))[0]["content"][0]
        assert first["text"] == "What?"


def test_parse_structured_output() -> None:
    assert parse_structured_output('{"colour": "red", "orientation": "square"}', SCHEMA) == {
        "colour": "red",
        "orientation": "square",
    }
    for bad in ("not json", '{"colour": "red"}', '["a"]', ""):
        with pytest.raises(errors.OutputParseError):
            parse_structured_output(bad, SCHEMA)


# -- calls against the simulator ------------------------------------------------------------------
def png(size: tuple[int, int] = (40, 30), colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def as_part(data: bytes, detail: str = "low") -> tuple[str, str]:
    import base64

    return "data:image/png;base64," + base64.b64encode(data).decode(), detail


def client_for(base_url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=key,
        base_url=base_url,
        max_retries=0,
        http_client=openai.DefaultAioHttpClient(timeout=30),
    )


@pytest.fixture
async def ok_client(sims: dict[str, Sim]) -> AsyncIterator[openai.AsyncOpenAI]:
    client = client_for(sims["ok"].base_url)
    yield client
    await client.close()


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_call_extracts_text_usage_and_headers(
    ok_client: openai.AsyncOpenAI, api: str
) -> None:
    data = png()
    seen: list[Mapping[str, str]] = []

    async def on_headers(h: Mapping[str, str]) -> None:
        seen.append(h)

    out = await call_openai(
        ok_client, api=api, model="gpt-4.1-mini", prompt="What is it?", images=[as_part(data)],
        max_output_tokens=60, timeout=10, on_headers=on_headers,
    )  # fmt: skip
    assert f"IMAGE sha256={hashlib.sha256(data).hexdigest()[:16]}" in out.text
    assert out.prompt_tokens > 0 and 0 < out.completion_tokens <= 60
    assert 0 < out.latency_seconds < 10
    assert len(seen) == 1 and "x-ratelimit-remaining-tokens" in seen[0]
    assert out.headers["x-ratelimit-limit-requests"] == seen[0]["x-ratelimit-limit-requests"]


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_call_with_schema_gives_parseable_json(
    ok_client: openai.AsyncOpenAI, api: str
) -> None:
    out = await call_openai(
        ok_client, api=api, model="gpt-4.1-mini", prompt="Describe it.",
        images=[as_part(png((30, 60), "blue"))], max_output_tokens=200, json_schema=SCHEMA,
        timeout=10,
    )  # fmt: skip
    value = parse_structured_output(out.text, SCHEMA)
    assert value["orientation"] == "portrait"


async def test_call_maps_status_errors_and_reports_429_headers(sims: dict[str, Sim]) -> None:
    client = client_for(sims["tight"].base_url)
    seen: list[Mapping[str, str]] = []

    async def on_headers(h: Mapping[str, str]) -> None:
        seen.append(h)

    kw: dict[str, Any] = dict(
        api="chat", model="gpt-4.1", prompt="Hi", images=[as_part(png())], max_output_tokens=10,
        timeout=10, on_headers=on_headers,
    )  # fmt: skip
    try:
        await call_openai(client, **kw)
        with pytest.raises(errors.RateLimitedError) as info:
            await call_openai(client, **kw)
    finally:
        await client.close()
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert len(seen) == 2  # the 429's headers reach the limiter too
    assert seen[1]["x-ratelimit-remaining-requests"] == "0"


async def test_call_auth_error(sims: dict[str, Sim]) -> None:
    client = client_for(sims["ok"].base_url, key="sk-not-the-right-one-xyz")
    try:
        with pytest.raises(errors.AuthenticationError) as info:
            await call_openai(
                client, api="responses", model="gpt-4.1-mini", prompt="Hi",
                images=[as_part(png())], max_output_tokens=10, timeout=10,
            )  # fmt: skip
    finally:
        await client.close()
    assert "sk-not-the-right-one-xyz" not in str(info.value)


async def test_call_timeout(silent_server: tuple[str, str]) -> None:
    client = client_for(silent_server[0])
    started = time.monotonic()
    try:
        with pytest.raises(errors.UpstreamTimeoutError) as info:
            await call_openai(
                client, api="chat", model="gpt-4.1-mini", prompt="Hi", images=[as_part(png())],
                max_output_tokens=10, timeout=0.6,
            )  # fmt: skip
    finally:
        await client.close()
    assert 0.5 <= time.monotonic() - started < 3
    assert info.value.retryable and info.value.code == "timeout"


@pytest.mark.parametrize("where", ["refused", "dropped"])
async def test_call_connection_errors(silent_server: tuple[str, str], where: str) -> None:
    base = f"http://127.0.0.1:{free_port()}/v1" if where == "refused" else silent_server[1]
    client = client_for(base)
    try:
        with pytest.raises(errors.UpstreamConnectionError) as info:
            await call_openai(
                client, api="chat", model="gpt-4.1-mini", prompt="Hi", images=[as_part(png())],
                max_output_tokens=10, timeout=10,
            )  # fmt: skip
    finally:
        await client.close()
    assert info.value.retryable and info.value.code == "connection_error"
