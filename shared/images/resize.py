"""Model-aware sizing and re-encoding: send exactly what the model sees, in as few bytes as we can.

The API bills by the size it looks at (``shared.vision_tokens.seen_size``), so shrinking to that
size keeps the token count and drops the wasted bytes. ``max_image_tokens`` shrinks further to fit
a per-job budget.

>>> target_size("gpt-4o", 4000, 3000, "high")
(1024, 768, 'high')
>>> target_size("gpt-4o", 4000, 3000, "high", max_image_tokens=300)
(512, 384, 'high')
>>> target_size("gpt-4o", 4000, 3000, "high", max_image_tokens=100)
(512, 384, 'low')
"""

from __future__ import annotations

import io

from PIL import Image

from shared.errors import ImageTooLargeError
from shared.vision_tokens import Detail, image_tokens, seen_size, vision_spec

# Pillow first box-averages by an integer factor while the ratio stays above this, then applies
# Lanczos: much faster on big non-JPEG images and indistinguishable at these ratios.
REDUCING_GAP = 3.0
# Below this ratio (e.g. what is left after a JPEG draft decode at 1/2 or 1/4) a short (tent)
# filter is enough: >= 40 dB PSNR against Lanczos from the full image (benchmarks/images.py)
# at a third of the cost.
SHORT_FILTER_MAX_RATIO = 2.5
SHORT_FILTER = Image.Resampling.BILINEAR


def _scaled(w: int, h: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _fit_budget(model: str, w: int, h: int, detail: Detail, budget: int) -> tuple[int, int] | None:
    """Largest (w, h) of the same aspect, no larger than given, costing <= ``budget`` tokens."""
    if image_tokens(model, w, h, detail) <= budget:
        return w, h
    lo, hi = 1, max(w, h)  # tokens grow monotonically with the long side: binary search
    best: tuple[int, int] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        size = _scaled(w, h, mid)
        if image_tokens(model, *size, detail) <= budget:
            best, lo = size, mid + 1
        else:
            hi = mid - 1
    return best


def target_size(
    model: str, width: int, height: int, detail: Detail, max_image_tokens: int | None = None
) -> tuple[int, int, Detail]:
    """The size to send (never larger than the original) and the detail to send it at.

    Without a budget the result costs exactly ``image_tokens(model, width, height, detail)``.
    With one, the image shrinks until it fits; a tile model falls back to ``detail="low"`` when
    even one high-detail tile is over budget. Raises ``ImageTooLargeError`` when nothing fits.
    """
    tw, th = seen_size(model, width, height, detail)
    if max_image_tokens is None:
        return tw, th, detail
    fitted = _fit_budget(model, tw, th, detail, max_image_tokens)
    if fitted is not None:
        return fitted[0], fitted[1], detail
    spec = vision_spec(model)
    if spec.kind == "tile" and detail != "low" and spec.base <= max_image_tokens:
        lw, lh = seen_size(model, width, height, "low")
        return lw, lh, "low"
    least = image_tokens(model, 1, 1, "low" if spec.kind == "tile" else detail)
    raise ImageTooLargeError(
        f"max_image_tokens={max_image_tokens} is below the {least} tokens that any image costs "
        f"on {model}"
    )


def resize_image(
    im: Image.Image,
    size: tuple[int, int],
    box: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """Downscale to ``size`` (``box``: the region of ``im`` that holds the picture).

    Large ratios: Lanczos after an integer box reduction; small ones: a tent (bilinear) filter.
    """
    if im.size == size and box is None:
        return im
    ratio = max(im.width / size[0], im.height / size[1])
    if ratio <= SHORT_FILTER_MAX_RATIO:
        return im.resize(size, SHORT_FILTER, box=box)
    return im.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)


def encode(im: Image.Image, *, quality: int, try_png: bool) -> tuple[bytes, str]:
    """Encode for the API: JPEG for opaque pictures, PNG with alpha or when it is smaller.

    Returns ``(bytes, format)`` with format ``"jpeg"`` or ``"png"``; no metadata is written.
    """
    if im.mode in ("RGBA", "LA"):
        return _png(im), "png"
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)
    jpeg = buf.getvalue()
    if try_png:
        png = _png(im)
        if len(png) < len(jpeg):
            return png, "png"
    return jpeg, "jpeg"


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    # compress_level 6 is zlib's default trade-off; 9 is ~3x slower for ~2 % smaller files.
    im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()
