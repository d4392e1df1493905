"""Small generated inputs for the image tests: real files, made in memory, no fixtures on disk."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from PIL import Image


def encode(im: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def photo(size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A smooth, photo-like RGB picture (gradients in each channel)."""
    w, h = size
    r = Image.linear_gradient("L").resize(size)
    g = Image.linear_gradient("L").rotate(90).resize(size)
    b = Image.radial_gradient("L").resize(size)
    return Image.merge("RGB", (r, g, b)).resize((w, h))


def halves(size: tuple[int, int], left: str, right: str) -> Image.Image:
    """Left half one colour, right half another: makes rotations visible."""
    im = Image.new("RGB", size, left)
    im.paste(Image.new("RGB", (size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return im


def jpeg_with_exif(im: Image.Image, orientation: int, gps: bool = False) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "imgq-test-camera"  # Make
    if gps:
        exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}
    return encode(im, "JPEG", quality=90, exif=exif.tobytes())


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header claiming ``width`` x ``height``, tiny IDAT: costs nothing to build."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def animated_gif() -> bytes:
    frames = [Image.new("P", (64, 48), i) for i in range(3)]
    for i, f in enumerate(frames):
        f.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
        frames[i] = f
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def apng() -> bytes:
    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "green", "blue")]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def palette_with_transparency() -> bytes:
    im = Image.new("P", (64, 64), 0)
    im.putpalette([255, 255, 255, 255, 0, 0] + [0] * 762)
    im.paste(1, (16, 16, 48, 48))
    return encode(im, "PNG", transparency=0)


def gray16() -> bytes:
    return encode(Image.new("I;16", (100, 80), 40000), "PNG")


def line_art(size: tuple[int, int] = (1200, 900)) -> Image.Image:
    """A screenshot-like picture: white page, black text-like strokes (PNG beats JPEG here)."""
    im = Image.new("RGB", size, "white")
    for y in range(20, size[1] - 20, 24):
        for x in range(20, size[0] - 40, 37):
            im.paste((0, 0, 0), (x, y, x + 25, y + 3))
    return im
