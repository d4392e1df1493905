"""Option checks and prices of image models (pure functions: the simulator and submit share them)."""

from __future__ import annotations

import pytest

from shared.generation import (
    GenerationOptions,
    check_edit_inputs,
    check_options,
    check_tool_options,
)
from shared.image_models import generation_cost_usd, input_image_tokens, output_tokens
from tests.generate.conftest import mask_png, picture


@pytest.mark.parametrize(
    ("opts", "edit", "param"),
    [
        (GenerationOptions(background="transparent", output_format="jpeg"), False, "background"),
        (GenerationOptions(output_compression=50), False, "output_compression"),
        (
            GenerationOptions(output_format="webp", output_compression=101),
            False,
            "output_compression",
        ),
        (GenerationOptions(n=11), False, "n"),
        (GenerationOptions(n=0), False, "n"),
        (GenerationOptions(moderation="low"), True, "moderation"),
        (GenerationOptions(model="dall-e-3"), True, "model"),
        (GenerationOptions(model="dall-e-3", style="cartoon"), False, "style"),
        (GenerationOptions(model="dall-e-2", style="vivid"), False, "style"),
        (GenerationOptions(model="dall-e-2", response_format="png"), False, "response_format"),
        (GenerationOptions(model="dall-e-2", size="1792x1024"), False, "size"),
    ],
)
def test_refused_options_name_their_parameter(
    opts: GenerationOptions, edit: bool, param: str
) -> None:
    problem = check_options(opts, prompt="a cat", edit=edit)
    assert problem is not None and problem.param == param


@pytest.mark.parametrize(
    "opts",
    [
        GenerationOptions(size="1024x1536", quality="high", background="transparent",
                          output_format="webp", output_compression=80, moderation="low", n=10),
        GenerationOptions(model="dall-e-3", size="1792x1024", quality="hd", style="natural"),
        GenerationOptions(model="dall-e-2", size="256x256", n=10, response_format="url"),
    ],
)  # fmt: skip
def test_valid_options_pass(opts: GenerationOptions) -> None:
    assert check_options(opts, prompt="a cat", edit=False) is None


def test_prompt_length_is_per_model() -> None:
    long = "x" * 4001
    assert check_options(GenerationOptions(), prompt=long, edit=False) is None
    problem = check_options(GenerationOptions(model="dall-e-3"), prompt=long, edit=False)
    assert problem is not None and problem.code == "string_above_max_length"


def test_tool_options_are_one_gpt_image_picture() -> None:
    assert check_tool_options(GenerationOptions(size="1024x1024"), prompt="x") is None
    bad = check_tool_options(GenerationOptions(model="dall-e-3"), prompt="x")
    assert bad is not None and bad.param == "model"


def test_edit_inputs() -> None:
    seen, problem = check_edit_inputs(
        "gpt-image-1", [picture(64, 48), picture(10, 10, "WEBP")], None
    )
    assert problem is None and [(s.format, s.width, s.height) for s in seen] == [
        ("PNG", 64, 48), ("WEBP", 10, 10)]  # fmt: skip
    _, problem = check_edit_inputs("gpt-image-1", [picture()] * 17, None)
    assert problem is not None and problem.code == "too_many_images"
    _, problem = check_edit_inputs("gpt-image-1", [b"not an image"], None)
    assert problem is not None and problem.code == "invalid_image_file"
    _, problem = check_edit_inputs("dall-e-2", [picture(32, 32, "JPEG")], None)
    assert problem is not None and "format must be in [png]" in problem.message
    _, problem = check_edit_inputs("gpt-image-1", [picture(64, 48)], mask_png(64, 48))
    assert problem is None
    _, problem = check_edit_inputs("gpt-image-1", [], None)
    assert problem is not None and problem.param == "image"


def test_tokens_and_prices() -> None:
    assert output_tokens("gpt-image-1", "1536x1024", "medium") == 1568
    assert output_tokens("gpt-image-1", None, None) == 6240  # auto: the upper bound
    assert output_tokens("dall-e-3", "1024x1024", "hd") == 0
    assert input_image_tokens(4096, 1024) == 65 + 129 * 4  # 2048x512 -> 4 tiles
    usd = generation_cost_usd("gpt-image-1", n_images=2, size="1024x1024", quality="high",
                              text_tokens=100, image_tokens=200, output_image_tokens=8320)  # fmt: skip
    assert usd == pytest.approx((100 * 5 + 200 * 10 + 8320 * 40) / 1e6)
    assert generation_cost_usd("dall-e-3", n_images=1, size="1024x1792", quality="hd") == 0.12
    assert generation_cost_usd("dall-e-2", n_images=3, size="512x512", quality=None) == 0.054
