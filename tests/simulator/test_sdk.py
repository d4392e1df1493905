"""The official openai SDK, sync and async, chat and responses, streaming and not, unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from openai import AsyncOpenAI, NotFoundError, OpenAI
from pydantic import BaseModel

from shared.text_tokens import count_tokens, prompt_tokens
from shared.vision_tokens import image_tokens
from simulator.durations import parse_duration
from tests.conftest import Sim
from tests.simulator.helpers import KEY, data_url, image_bytes, sha16

PNG = image_bytes(64, 32, (250, 10, 10))
JPEG = image_bytes(40, 90, (20, 40, 230), "JPEG")
QUESTION = "What is in this image?"


def _client(sim: Sim) -> OpenAI:
    return OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0, timeout=30)


def _aclient(sim: Sim) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0, timeout=30)


def _messages(*images: tuple[bytes, str]) -> Any:
    parts: list[dict[str, object]] = [{"type": "text", "text": QUESTION}]
    for data, detail in images:
        parts.append({"type": "image_url", "image_url": {"url": data_url(data), "detail": detail}})
    return [
        {"role": "system", "content": "You describe images."},
        {"role": "user", "content": parts},
    ]


def _expected_text(model: str, *images: tuple[bytes, int, int, str, str]) -> str:
    lines = []
    for data, w, h, detail, _ in images:
        tokens = image_tokens(model, w, h, detail)
        lines.append(f"IMAGE sha256={sha16(data)} size={w}x{h} tokens={tokens}")
    return "\n".join(lines)


def test_sync_chat_answer_usage_and_headers(sim: Sim) -> None:
    raw = _client(sim).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=_messages((PNG, "high")),
        max_tokens=200,
    )
    completion = raw.parse()
    text = completion.choices[0].message.content or ""
    first, second = text.splitlines()
    assert first == f"IMAGE sha256={sha16(PNG)} size=64x32 tokens=255"
    assert second == "A landscape PNG image, mostly red (#fa0a0a)."
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    expected_prompt = prompt_tokens(["You describe images.", QUESTION], [255], messages=2)
    assert usage.prompt_tokens == expected_prompt
    assert usage.completion_tokens == count_tokens(text)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "1000000"
    assert h["x-ratelimit-limit-tokens"] == "100000000"
    assert int(h["x-ratelimit-remaining-requests"]) == 999_999
    assert int(h["x-ratelimit-remaining-tokens"]) == 100_000_000 - expected_prompt - 200
    parse_duration(h["x-ratelimit-reset-requests"])
    parse_duration(h["x-ratelimit-reset-tokens"])
    assert h["x-request-id"].startswith("req_")
    assert int(h["openai-processing-ms"]) >= 0


def test_several_images_each_get_a_line(sim: Sim) -> None:
    completion = _client(sim).chat.completions.create(
        model="gpt-4.1-mini",
        messages=_messages((PNG, "low"), (JPEG, "high")),
    )
    text = completion.choices[0].message.content or ""
    image_lines = [line for line in text.splitlines() if line.startswith("IMAGE ")]
    assert (
        image_lines
        == _expected_text(
            "gpt-4.1-mini", (PNG, 64, 32, "low", ""), (JPEG, 40, 90, "high", "")
        ).splitlines()
    )
    assert "portrait JPEG image, mostly blue" in text
    # patch model: ceil(2*1 * 1.62) = 4 and ceil(2*3 * 1.62) = 10
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == prompt_tokens(
        ["You describe images.", QUESTION], [4, 10], messages=2
    )


async def test_async_chat_stream_with_usage(sim: Sim) -> None:
    client = _aclient(sim)
    try:
        plain = await client.chat.completions.create(
            model="gpt-4o",
            messages=_messages((PNG, "low")),
            max_tokens=100,
        )
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=_messages((PNG, "low")),
            max_tokens=100,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    finally:
        await client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == plain.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])


def test_sync_chat_stream_without_usage(sim: Sim) -> None:
    stream = _client(sim).chat.completions.create(
        model="gpt-4o",
        messages=_messages((PNG, "low")),
        stream=True,
    )
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    assert "IMAGE sha256=" in "".join(c.choices[0].delta.content or "" for c in chunks)


def test_sync_responses_with_instructions(sim: Sim) -> None:
    response = _client(sim).responses.create(
        model="gpt-5",
        instructions="Be brief.",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": QUESTION},
                    {"type": "input_image", "image_url": data_url(JPEG), "detail": "high"},
                ],
            }
        ],
    )
    assert response.status == "completed"
    assert response.output_text.splitlines()[0] == _expected_text(
        "gpt-5", (JPEG, 40, 90, "high", "")
    )
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == prompt_tokens(["Be brief.", QUESTION], [210], messages=2)
    assert usage.output_tokens == count_tokens(response.output_text)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_responses_string_input(sim: Sim) -> None:
    response = _client(sim).responses.create(model="gpt-4o", input="hello there")
    assert response.output_text == "No image was provided."
    assert response.usage is not None
    assert response.usage.input_tokens == prompt_tokens(["hello there"])


async def test_async_responses_stream(sim: Sim) -> None:
    client = _aclient(sim)
    content = [{"type": "input_image", "image_url": data_url(PNG), "detail": "low"}]
    try:
        plain = await client.responses.create(
            model="gpt-4o",
            input=[{"role": "user", "content": content}],
        )
        async with client.responses.stream(
            model="gpt-4o",
            input=[{"role": "user", "content": content}],
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
    finally:
        await client.close()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == plain.output_text
    assert final.usage is not None and plain.usage is not None
    assert final.usage.input_tokens == plain.usage.input_tokens


def test_max_tokens_truncates(sim: Sim) -> None:
    client = _client(sim)
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=_messages((PNG, "low")),
        max_completion_tokens=5,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert count_tokens(completion.choices[0].message.content or "") <= 5
    content = [{"type": "input_image", "image_url": data_url(PNG), "detail": "low"}]
    response = client.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": content}],
        max_output_tokens=16,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens <= 16


class Description(BaseModel):
    colour: str
    orientation: str
    width: int
    height: int
    summary: str
    tags: list[str]
    confident: bool


def test_sdk_parse_structured_outputs(sim: Sim) -> None:
    client = _client(sim)
    parsed = (
        client.chat.completions.parse(
            model="gpt-4o",
            messages=_messages((PNG, "low")),
            response_format=Description,
        )
        .choices[0]
        .message.parsed
    )
    assert parsed is not None
    assert (parsed.colour, parsed.orientation, parsed.width, parsed.height) == (
        "red",
        "landscape",
        64,
        32,
    )
    assert f"sha256={sha16(PNG)}" in parsed.summary
    response = client.responses.parse(
        model="gpt-4o",
        input=[{"role": "user", "content": [{"type": "input_image", "image_url": data_url(JPEG)}]}],
        text_format=Description,
    )
    assert response.output_parsed is not None
    assert response.output_parsed.colour == "blue"
    assert response.output_parsed.orientation == "portrait"


def test_models_endpoints(sim: Sim) -> None:
    client = _client(sim)
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "o4-mini"} <= ids
    assert client.models.retrieve("gpt-4o-2024-08-06").id == "gpt-4o-2024-08-06"
    with pytest.raises(NotFoundError) as info:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "model_not_found"
    with pytest.raises(NotFoundError):
        client.responses.create(model="no-such-model", input="hi")


async def test_many_concurrent_async_calls(sim: Sim) -> None:
    client = _aclient(sim)
    try:
        results = await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="gpt-4o",
                    messages=_messages((image_bytes(8 + i, 8, (i, i, i)), "low")),
                )
                for i in range(40)
            ]
        )
    finally:
        await client.close()
    sizes = {r.choices[0].message.content.split()[2] for r in results}
    assert sizes == {f"size={8 + i}x8" for i in range(40)}


def test_sync_responses_stream(sim: Sim) -> None:
    content = [{"type": "input_image", "image_url": data_url(JPEG), "detail": "low"}]
    events = list(
        _client(sim).responses.create(
            model="o4-mini", input=[{"role": "user", "content": content}], stream=True
        )
    )
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas == final.output_text
    assert deltas.startswith(f"IMAGE sha256={sha16(JPEG)} size=40x90 tokens=11\n")  # 2*3 * 1.72
    assert [e.sequence_number for e in events] == list(range(len(events)))
