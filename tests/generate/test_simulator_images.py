"""The simulated Images API through the official openai SDK over HTTP."""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from shared.image_models import input_image_tokens, output_tokens
from shared.text_tokens import count_tokens
from simulator.images_api import MODERATION_TRIGGER
from tests.conftest import Sim
from tests.generate.conftest import KEY, decode, fast_sim_args, mask_png, picture


def sdk(sim: Sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)


@pytest.mark.parametrize(
    ("fmt", "size", "quality", "pil"),
    [
        ("png", "1024x1024", "low", "PNG"),
        ("jpeg", "1536x1024", "medium", "JPEG"),
        ("webp", "1024x1536", "high", "WEBP"),
    ],
)
def test_gpt_image_generates_real_images_with_usage(
    images_sim: Sim, fmt: str, size: str, quality: str, pil: str
) -> None:
    prompt = "a lighthouse at dusk"
    with sdk(images_sim) as client:
        resp = client.images.generate(
            model="gpt-image-1", prompt=prompt, n=2, size=size, quality=quality,  # type: ignore[arg-type]
            output_format=fmt,  # type: ignore[arg-type]
        )  # fmt: skip
    assert resp.data is not None and len(resp.data) == 2
    w, h = (int(x) for x in size.split("x"))
    for item in resp.data:
        assert item.url is None and item.b64_json
        img = decode(base64.b64decode(item.b64_json))
        assert (img.format, img.size) == (pil, (w, h))
    assert resp.data[0].b64_json != resp.data[1].b64_json  # n distinct pictures
    assert resp.usage is not None
    assert resp.usage.input_tokens_details.text_tokens == count_tokens(prompt)
    assert resp.usage.input_tokens_details.image_tokens == 0
    assert resp.usage.output_tokens == 2 * output_tokens("gpt-image-1", size, quality)
    assert (resp.size, resp.quality, resp.output_format) == (size, quality, fmt)


def test_same_prompt_same_bytes(images_sim: Sim) -> None:
    with sdk(images_sim) as client:
        a, b, c = (
            client.images.generate(model="gpt-image-1", prompt=p, size="1024x1024", quality="low")
            for p in ("a red fox", "a red fox", "a blue fox")
        )
    assert a.data and b.data and c.data
    assert a.data[0].b64_json == b.data[0].b64_json
    assert a.data[0].b64_json != c.data[0].b64_json


def test_transparent_background_is_rgba(images_sim: Sim) -> None:
    with sdk(images_sim) as client:
        resp = client.images.generate(
            model="gpt-image-1", prompt="a sticker", size="1024x1024", quality="low",
            background="transparent",
        )  # fmt: skip
    assert resp.data and resp.data[0].b64_json
    img = decode(base64.b64decode(resp.data[0].b64_json))
    assert img.mode == "RGBA" and img.getpixel((0, 0))[3] in (0, 255)  # type: ignore[index]
    assert resp.background == "transparent"


def test_dalle3_url_and_revised_prompt(images_sim: Sim) -> None:
    with sdk(images_sim) as client:
        resp = client.images.generate(model="dall-e-3", prompt="a cat", size="1024x1792")
        b64 = client.images.generate(
            model="dall-e-3", prompt="a cat", size="1024x1024", response_format="b64_json"
        )
    assert resp.data and resp.data[0].url and resp.usage is None
    assert "a cat" in (resp.data[0].revised_prompt or "")
    with urllib.request.urlopen(resp.data[0].url, timeout=10) as r:
        img = decode(r.read())
    assert (img.format, img.size) == ("PNG", (1024, 1792))
    assert b64.data and b64.data[0].b64_json and b64.data[0].url is None


@pytest.mark.parametrize(
    ("kwargs", "param", "needle"),
    [
        ({"model": "dall-e-3", "n": 2}, "n", "n=1"),
        ({"model": "gpt-image-1", "size": "512x512"}, "size", "Invalid value: '512x512'"),
        ({"model": "dall-e-3", "quality": "low"}, "quality", "Invalid value: 'low'"),
        ({"model": "dall-e-2", "background": "transparent"}, "background", "Unknown parameter"),
        ({"model": "gpt-image-1", "response_format": "url"}, "response_format", "Unknown"),
        ({"model": "gpt-4o"}, "model", "Invalid value: 'gpt-4o'"),
    ],
)
def test_invalid_options_are_400s(
    images_sim: Sim, kwargs: dict[str, object], param: str, needle: str
) -> None:
    with sdk(images_sim) as client, pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="a cat", **kwargs)  # type: ignore[arg-type]
    err = info.value.body
    assert isinstance(err, dict) and err["param"] == param and needle in err["message"]
    assert err["type"] == "invalid_request_error"


def test_edit_with_two_images_and_mask(images_sim: Sim) -> None:
    first, second = picture(64, 48), picture(100, 80, "JPEG")
    with sdk(images_sim) as client:
        resp = client.images.edit(
            model="gpt-image-1", image=[("a.png", first), ("b.jpg", second)],
            mask=("m.png", mask_png(64, 48)), prompt="add a hat", size="1024x1536", quality="low",
        )  # fmt: skip
    assert resp.data and resp.data[0].b64_json and resp.usage is not None
    img = decode(base64.b64decode(resp.data[0].b64_json))
    assert (img.format, img.size) == ("PNG", (1024, 1536))
    expected = input_image_tokens(64, 48) + input_image_tokens(100, 80)
    assert resp.usage.input_tokens_details.image_tokens == expected
    assert resp.usage.output_tokens == output_tokens("gpt-image-1", "1024x1536", "low")


@pytest.mark.parametrize(
    ("mask", "needle"),
    [
        (mask_png(32, 32), "does not match image size 64x48"),
        (mask_png(64, 48, alpha=False), "alpha channel"),
        (picture(64, 48, "JPEG"), "must be a PNG"),
    ],
)
def test_bad_masks_are_refused(images_sim: Sim, mask: bytes, needle: str) -> None:
    with sdk(images_sim) as client, pytest.raises(openai.BadRequestError) as info:
        client.images.edit(
            model="gpt-image-1", image=("a.png", picture(64, 48)), mask=("m.png", mask),
            prompt="add a hat",
        )  # fmt: skip
    err = info.value.body
    assert isinstance(err, dict) and err["param"] == "mask" and needle in err["message"]


def test_edit_refuses_gif_and_dalle2_non_square(images_sim: Sim) -> None:
    with sdk(images_sim) as client:
        with pytest.raises(openai.BadRequestError, match="format must be in"):
            client.images.edit(
                model="gpt-image-1", image=("a.gif", picture(8, 8, "GIF")), prompt="x"
            )
        with pytest.raises(openai.BadRequestError, match="square"):
            client.images.edit(model="dall-e-2", image=("a.png", picture(64, 48)), prompt="x")


def test_moderation_trigger_is_refused(images_sim: Sim) -> None:
    with sdk(images_sim) as client, pytest.raises(openai.BadRequestError) as info:
        client.images.generate(model="gpt-image-1", prompt=f"a {MODERATION_TRIGGER} please")
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "moderation_blocked"


def test_images_per_minute_limit(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory(*fast_sim_args(ipm=3))
    with sdk(sim) as client:
        first = client.images.with_raw_response.generate(
            model="gpt-image-1", prompt="one", n=2, size="1024x1024", quality="low"
        )
        assert first.headers["x-ratelimit-limit-images"] == "3"
        assert first.headers["x-ratelimit-remaining-images"] == "1"
        with pytest.raises(openai.RateLimitError) as info:
            client.images.generate(model="gpt-image-1", prompt="two", n=2, quality="low")
        too_big = pytest.raises(openai.RateLimitError, match="Request too large")
        with too_big:
            client.images.generate(model="gpt-image-1", prompt="three", n=4, quality="low")
    err = info.value
    assert isinstance(err.body, dict) and err.body["type"] == "images"
    assert "images per min (IPM)" in err.body["message"]
    assert float(err.response.headers["retry-after-ms"]) > 0
    with urllib.request.urlopen(f"{sim.root}/_sim/images/stats", timeout=5) as r:
        import json

        stats = json.loads(r.read())
    assert stats["rate_limited"] == 2
    assert stats["by_model"]["gpt-image-1"]["images"] == 2
    req = urllib.request.Request(f"{sim.root}/_sim/images/reset", data=b"", method="POST")
    urllib.request.urlopen(req, timeout=5).close()
    with sdk(sim) as client:  # buckets full again
        client.images.generate(model="gpt-image-1", prompt="four", n=3, quality="low")


def test_responses_image_generation_tool(images_sim: Sim) -> None:
    tool: Any = {"type": "image_generation", "size": "1024x1536", "quality": "low",
                 "output_format": "webp"}  # fmt: skip
    with sdk(images_sim) as client:
        resp = client.responses.create(model="gpt-4.1-mini", input="draw a fox", tools=[tool])
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(
                model="gpt-4.1-mini", input="draw a fox",
                tools=[{"type": "image_generation", "size": "512x512"}],  # type: ignore[typeddict-item]
            )  # fmt: skip
        with pytest.raises(openai.BadRequestError, match="safety system"):
            client.responses.create(
                model="gpt-4.1-mini", input=f"draw a {MODERATION_TRIGGER}", tools=[tool]
            )
    calls = [item for item in resp.output if item.type == "image_generation_call"]
    assert len(calls) == 1 and calls[0].result
    img = decode(base64.b64decode(calls[0].result))
    assert (img.format, img.size) == ("WEBP", (1024, 1536))
    assert resp.usage is not None
    assert resp.usage.output_tokens == output_tokens("gpt-image-1", "1024x1536", "low")
    err = info.value.body
    assert isinstance(err, dict) and err["param"] == "tools[0].size"
