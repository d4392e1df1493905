"""Every worked example of OpenAI's vision guide, and each model family's numbers."""

from __future__ import annotations

import math

import pytest

from shared.vision_tokens import image_tokens, is_known_model, patch_count, seen_size


def test_guide_tile_examples() -> None:
    assert image_tokens("gpt-4o", 1024, 1024, "high") == 765  # 170 * 4 + 85
    assert image_tokens("gpt-4o", 2048, 4096, "high") == 1105  # 170 * 6 + 85
    assert image_tokens("gpt-4o", 4096, 8192, "low") == 85
    assert seen_size("gpt-4o", 2048, 4096, "high") == (768, 1536)


def test_guide_patch_examples() -> None:
    assert patch_count(1024, 1024) == 1024
    assert seen_size("gpt-4.1-mini", 1800, 2400) == (1056, 1408)
    assert patch_count(1800, 2400) == 1452


@pytest.mark.parametrize(
    ("model", "base", "tile"),
    [
        ("gpt-4o", 85, 170),
        ("gpt-4o-2024-08-06", 85, 170),
        ("gpt-4.1", 85, 170),
        ("gpt-4.5-preview", 85, 170),
        ("gpt-4o-mini", 2833, 5667),
        ("gpt-4o-mini-2024-07-18", 2833, 5667),
        ("gpt-5", 70, 140),
        ("o1", 75, 150),
        ("o3", 75, 150),
    ],
)
def test_tile_models(model: str, base: int, tile: int) -> None:
    assert image_tokens(model, 4096, 8192, "low") == base
    assert image_tokens(model, 1024, 1024, "high") == base + 4 * tile
    assert image_tokens(model, 1024, 1024, "auto") == base + 4 * tile
    assert image_tokens(model, 2048, 4096, "high") == base + 6 * tile
    # Small images are never upscaled: one tile.
    assert image_tokens(model, 100, 60, "high") == base + tile


@pytest.mark.parametrize(
    ("model", "multiplier"),
    [
        ("gpt-4.1-mini", 1.62),
        ("gpt-5-mini", 1.62),
        ("gpt-4.1-nano", 2.46),
        ("gpt-5-nano", 2.46),
        ("o4-mini", 1.72),
    ],
)
def test_patch_models(model: str, multiplier: float) -> None:
    assert image_tokens(model, 1024, 1024) == math.ceil(1024 * multiplier)
    assert image_tokens(model, 1800, 2400) == math.ceil(1452 * multiplier)
    # detail does not change a patch model's count
    assert image_tokens(model, 1800, 2400, "low") == image_tokens(model, 1800, 2400, "high")
    assert image_tokens(model, 20000, 20000) <= math.ceil(1536 * multiplier)


def test_patch_cap_and_small_images() -> None:
    assert patch_count(10000, 10000) <= 1536
    assert patch_count(1, 1) == 1
    assert patch_count(33, 32) == 2


def test_unknown_models_and_bad_sizes() -> None:
    assert not is_known_model("text-davinci-003")
    with pytest.raises(KeyError):
        image_tokens("text-davinci-003", 10, 10)
    with pytest.raises(ValueError):
        image_tokens("gpt-4o", 0, 10)
