"""Image-generation models: what each accepts, what it costs, how it counts against limits.

A snapshot of OpenAI's public docs and price list (2025): gpt-image-1 bills tokens (text and image
input, image output; output tokens fixed by size x quality), DALL·E bills per image by size and
quality. Both are also limited in images per minute (IPM). The simulator bills with this table;
imgq validates options, reserves capacity and prices results with it.

>>> output_tokens("gpt-image-1", "1024x1024", "high")
4160
>>> image_price_usd("dall-e-3", "1792x1024", "hd")
0.12
>>> input_image_tokens(1024, 1024), input_image_tokens(1024, 1536)
(194, 323)
>>> image_model("dall-e-3").max_n
1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# gpt-image-1 output image tokens by quality and size ("auto" is billed as the largest).
GPT_IMAGE_OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
# gpt-image-1 reads input images like a tile model (base 65, tile 129) after scaling the shortest
# side to 512 px instead of 768 (images guide, "GPT Image 1").
GPT_IMAGE_INPUT_BASE = 65
GPT_IMAGE_INPUT_TILE = 129
_FIT_PX = 2048
_SHORT_PX = 512
_TILE_PX = 512


@dataclass(frozen=True)
class ImageModelSpec:
    """What one image model accepts and how it bills."""

    name: str
    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    default_size: str
    default_quality: str
    max_n: int
    ipm: int  # default images per minute (tier 1) when nothing else is known
    billing: str  # "tokens" (gpt-image-1) | "per_image" (DALL·E)
    edits: bool = False
    max_edit_images: int = 0
    output_formats: tuple[str, ...] = ("png",)
    backgrounds: bool = False  # background / output_format / output_compression / moderation
    styles: tuple[str, ...] = ()
    url_output: bool = False  # DALL·E may answer URLs (response_format)
    revised_prompt: bool = False
    max_prompt_chars: int = 32_000
    max_edit_image_bytes: int = 50 * 1024 * 1024
    edit_formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP")  # Pillow format names
    edit_square: bool = False  # DALL·E 2 edits only take square PNGs
    # USD per image by quality then size (DALL·E); USD per 1M tokens (gpt-image-1).
    per_image_usd: dict[str, dict[str, float]] = field(default_factory=dict)
    text_input_usd_per_m: float = 0.0
    image_input_usd_per_m: float = 0.0
    image_output_usd_per_m: float = 0.0


IMAGE_MODELS: dict[str, ImageModelSpec] = {
    "gpt-image-1": ImageModelSpec(
        name="gpt-image-1",
        sizes=("1024x1024", "1536x1024", "1024x1536", "auto"),
        qualities=("low", "medium", "high", "auto"),
        default_size="auto",
        default_quality="auto",
        max_n=10,
        ipm=5,
        billing="tokens",
        edits=True,
        max_edit_images=16,
        output_formats=("png", "jpeg", "webp"),
        backgrounds=True,
        text_input_usd_per_m=5.0,
        image_input_usd_per_m=10.0,
        image_output_usd_per_m=40.0,
    ),
    "dall-e-3": ImageModelSpec(
        name="dall-e-3",
        sizes=("1024x1024", "1792x1024", "1024x1792"),
        qualities=("standard", "hd"),
        default_size="1024x1024",
        default_quality="standard",
        max_n=1,
        ipm=7,
        billing="per_image",
        styles=("vivid", "natural"),
        url_output=True,
        revised_prompt=True,
        max_prompt_chars=4000,
        per_image_usd={
            "standard": {"1024x1024": 0.04, "1792x1024": 0.08, "1024x1792": 0.08},
            "hd": {"1024x1024": 0.08, "1792x1024": 0.12, "1024x1792": 0.12},
        },
    ),
    "dall-e-2": ImageModelSpec(
        name="dall-e-2",
        sizes=("256x256", "512x512", "1024x1024"),
        qualities=("standard",),
        default_size="1024x1024",
        default_quality="standard",
        max_n=10,
        ipm=50,
        billing="per_image",
        edits=True,
        max_edit_images=1,
        url_output=True,
        max_prompt_chars=1000,
        max_edit_image_bytes=4 * 1024 * 1024,
        edit_formats=("PNG",),
        edit_square=True,
        per_image_usd={"standard": {"256x256": 0.016, "512x512": 0.018, "1024x1024": 0.02}},
    ),
}


def is_image_model(model: str) -> bool:
    return model in IMAGE_MODELS


def image_model(model: str) -> ImageModelSpec:
    """The spec of ``model``; raises ``KeyError`` for a model that does not make images."""
    try:
        return IMAGE_MODELS[model]
    except KeyError:
        raise KeyError(f"{model!r} is not an image generation model") from None


def parse_size(size: str) -> tuple[int, int]:
    """``"1536x1024"`` -> (1536, 1024).

    >>> parse_size("1536x1024")
    (1536, 1024)
    """
    w, _, h = size.partition("x")
    return int(w), int(h)


def resolve_size(model: str, size: str | None) -> str:
    """The concrete size an answer has: ``auto`` (or unset) becomes 1024x1024 here."""
    spec = image_model(model)
    chosen = size or spec.default_size
    return "1024x1024" if chosen == "auto" else chosen


def resolve_quality(model: str, quality: str | None) -> str:
    """``auto``/unset -> the quality billed: ``high`` for gpt-image-1 (the upper bound)."""
    spec = image_model(model)
    chosen = quality or spec.default_quality
    return "high" if chosen == "auto" else chosen


def output_tokens(model: str, size: str | None, quality: str | None) -> int:
    """Output image tokens of one image (0 for models that bill per image).

    ``auto`` size reserves the largest size, ``auto`` quality the highest: an upper bound.
    """
    if image_model(model).billing != "tokens":
        return 0
    q = resolve_quality(model, quality)
    by_size = GPT_IMAGE_OUTPUT_TOKENS[q]
    if not size or size == "auto":
        return max(by_size.values())
    return by_size[size]


def input_image_tokens(width: int, height: int) -> int:
    """gpt-image-1 input tokens of one image: fit 2048x2048, shortest side to 512, 65 + 129/tile."""
    if width <= 0 or height <= 0:
        raise ValueError("image dimensions must be positive")
    scale = min(1.0, _FIT_PX / max(width, height))
    w, h = width * scale, height * scale
    if min(w, h) > _SHORT_PX:
        s2 = _SHORT_PX / min(w, h)
        w, h = w * s2, h * s2
    tiles = math.ceil(round(w) / _TILE_PX) * math.ceil(round(h) / _TILE_PX)
    return GPT_IMAGE_INPUT_BASE + GPT_IMAGE_INPUT_TILE * tiles


def image_price_usd(model: str, size: str, quality: str | None) -> float:
    """USD for one DALL·E image of ``size`` at ``quality``."""
    spec = image_model(model)
    return spec.per_image_usd[quality or spec.default_quality][size]


def generation_cost_usd(
    model: str,
    *,
    n_images: int,
    size: str,
    quality: str | None,
    text_tokens: int = 0,
    image_tokens: int = 0,
    output_image_tokens: int = 0,
) -> float:
    """Cost of one generation/edit answer: tokens for gpt-image-1, per image for DALL·E.

    >>> generation_cost_usd("gpt-image-1", n_images=1, size="1024x1024", quality="low",
    ...                     text_tokens=10, output_image_tokens=272)
    0.01093
    """
    spec = image_model(model)
    if spec.billing == "per_image":
        return round(n_images * image_price_usd(model, size, quality), 6)
    usd = (
        text_tokens * spec.text_input_usd_per_m
        + image_tokens * spec.image_input_usd_per_m
        + output_image_tokens * spec.image_output_usd_per_m
    ) / 1_000_000
    return round(usd, 8)
