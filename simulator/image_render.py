"""Deterministic pictures for the simulated Images API: same seed text, same bytes.

A picture is a background colour and a few shapes, all drawn from a PRNG seeded with the SHA-256
of the seed text, encoded as PNG, JPEG or WebP at the size asked.

>>> import io
>>> from PIL import Image
>>> data = render_image("a red fox|0", 64, 48, "png")
>>> data == render_image("a red fox|0", 64, 48, "png")
True
>>> Image.open(io.BytesIO(data)).size
(64, 48)
"""

from __future__ import annotations

import hashlib
import io
import random

from PIL import Image, ImageDraw

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
SHAPES = 6


def _colour(rng: random.Random, alpha: int | None = None) -> tuple[int, ...]:
    rgb = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    return rgb if alpha is None else (*rgb, alpha)


def render_image(
    seed_text: str,
    width: int,
    height: int,
    fmt: str,
    *,
    compression: int | None = None,
    transparent: bool = False,
) -> bytes:
    """Encoded image bytes of ``width`` x ``height`` in ``fmt`` (png, jpeg, webp).

    ``compression`` (0-100, jpeg/webp; OpenAI's default 100 = least loss) is the encoder quality;
    ``transparent`` leaves the background fully transparent (png/webp only).
    """
    rng = random.Random(hashlib.sha256(seed_text.encode()).digest())
    mode = "RGBA" if transparent else "RGB"
    background = (0, 0, 0, 0) if transparent else _colour(rng)
    img = Image.new(mode, (width, height), background)
    draw = ImageDraw.Draw(img)
    for _ in range(SHAPES):
        x0, x1 = sorted(rng.randrange(width) for _ in range(2))
        y0, y1 = sorted(rng.randrange(height) for _ in range(2))
        fill = _colour(rng, 255 if transparent else None)
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
    buf = io.BytesIO()
    pil_format = _PIL_FORMATS[fmt]
    options: dict[str, int] = {}
    if pil_format in ("JPEG", "WEBP"):
        options["quality"] = max(1, compression if compression is not None else 100)
    img.save(buf, pil_format, **options)
    return buf.getvalue()
