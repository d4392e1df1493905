"""Exact image-token maths from OpenAI's vision guide; the simulator bills with it, imgq estimates with it.

Two families:

* tile models (gpt-4o, gpt-4.1, gpt-4.5, gpt-4o-mini, gpt-5, o1, o3): ``detail="low"`` costs the
  base tokens; ``high``/``auto`` fit the image within 2048x2048, then shrink the shortest side to 768
  (downscale only) and cost ``base + tile * ceil(w/512) * ceil(h/512)``.
* patch models (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini): 32-px patches, at most 1536 after the
  documented shrink, times the model's multiplier. ``detail`` does not change the count.

>>> image_tokens("gpt-4o", 1024, 1024, "high")
765
>>> image_tokens("gpt-4o", 2048, 4096, "high")
1105
>>> image_tokens("gpt-4o", 4096, 8192, "low")
85
>>> seen_size("gpt-4.1-mini", 1800, 2400, "high")
(1056, 1408)

Rules come from the model catalogue (``shared.catalogue``); a rule may also be passed directly:

>>> image_tokens(VisionRule("patch", multiplier=1.62), 1800, 2400)
2353
"""

from __future__ import annotations

import math
from typing import Literal

from shared.catalogue import default_catalogue
from shared.catalogue_types import VisionRule

Detail = Literal["low", "high", "auto"]

PATCH_PX = 32
PATCH_BUDGET = 1536
TILE_PX = 512
TILE_FIT_PX = 2048
TILE_SHORT_SIDE_PX = 768
LOW_DETAIL_PX = 512
# Float slack so that e.g. 1056.0000000002 px still counts as 33 patches, not 34.
_EPS = 1e-6


# The per-model rules live in the model catalogue (shared/catalogue.py); this module keeps the maths.
VisionSpec = VisionRule


def vision_spec(model: str | VisionRule) -> VisionRule:
    """The rule for ``model`` (a name, or a rule passed through).

    Unknown models, and models without vision, raise ``KeyError`` (callers decide the policy).
    """
    if isinstance(model, VisionRule):
        return model
    spec = default_catalogue().find(model)
    if spec is None or spec.vision is None:
        raise KeyError(f"no vision token rules for model {model!r}")
    return spec.vision


def is_known_model(model: str) -> bool:
    """Whether the catalogue (with the operators' file) has image token rules for ``model``."""
    spec = default_catalogue().find(model)
    return spec is not None and spec.vision is not None


def vision_models() -> list[str]:
    """Catalogued names with image token rules (e.g. to test every rule)."""
    cat = default_catalogue()
    return [n for n in cat.names if (s := cat.find(n)) is not None and s.vision is not None]


def _ceil_div(x: float, d: int) -> int:
    return math.ceil(x / d - _EPS)


def _tile_high_size(w: int, h: int) -> tuple[int, int]:
    scale = min(1.0, TILE_FIT_PX / max(w, h))
    fw, fh = w * scale, h * scale
    short = min(fw, fh)
    if short > TILE_SHORT_SIDE_PX:
        s2 = TILE_SHORT_SIDE_PX / short
        fw, fh = fw * s2, fh * s2
    return _round_dims(fw, fh)


def _fit_within(w: int, h: int, box: int) -> tuple[int, int]:
    scale = min(1.0, box / max(w, h))
    return _round_dims(w * scale, h * scale)


def _round_dims(fw: float, fh: float) -> tuple[int, int]:
    return max(1, round(fw)), max(1, round(fh))


def _patch_size(w: int, h: int) -> tuple[int, int]:
    if _ceil_div(w, PATCH_PX) * _ceil_div(h, PATCH_PX) <= PATCH_BUDGET:
        return w, h
    r = math.sqrt(PATCH_PX**2 * PATCH_BUDGET / (w * h))
    wp, hp = w * r / PATCH_PX, h * r / PATCH_PX
    r *= min(math.floor(wp + _EPS) / wp, math.floor(hp + _EPS) / hp)
    # Floor (with slack) so the resized image never needs an extra patch row or column.
    return max(1, math.floor(w * r + _EPS)), max(1, math.floor(h * r + _EPS))


def seen_size(
    model: str | VisionRule, width: int, height: int, detail: Detail = "auto"
) -> tuple[int, int]:
    """The size the model actually looks at: sending exactly this costs the same tokens, fewer bytes."""
    if width <= 0 or height <= 0:
        raise ValueError("image dimensions must be positive")
    spec = vision_spec(model)
    if spec.kind == "patch":
        return _patch_size(width, height)
    if detail == "low":
        return _fit_within(width, height, LOW_DETAIL_PX)
    return _tile_high_size(width, height)


def patch_count(width: int, height: int) -> int:
    """Patches billed for an image on a patch model, before the multiplier (capped at 1536)."""
    w, h = _patch_size(width, height)
    return min(PATCH_BUDGET, _ceil_div(w, PATCH_PX) * _ceil_div(h, PATCH_PX))


def image_tokens(model: str | VisionRule, width: int, height: int, detail: Detail = "auto") -> int:
    """Tokens OpenAI bills for one image of ``width`` x ``height`` sent to ``model`` at ``detail``."""
    if width <= 0 or height <= 0:
        raise ValueError("image dimensions must be positive")
    spec = vision_spec(model)
    if spec.kind == "patch":
        return math.ceil(patch_count(width, height) * spec.multiplier - _EPS)
    if detail == "low":
        return spec.base
    w, h = _tile_high_size(width, height)
    return spec.base + spec.tile * _ceil_div(w, TILE_PX) * _ceil_div(h, TILE_PX)
