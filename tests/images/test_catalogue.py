"""The catalogue of bad and awkward inputs, each with its expected outcome.

Every row goes the producer's way: ``parse_source`` (path / bytes / base64 / data URL) and then
``prepare_image``. Errors must be the typed, permanent ones, with a message a person understands.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageCms

from shared.errors import (
    ImageError,
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedImageFormatError,
)
from shared.images import BytesSource, ImagePolicy, PreparedImage, parse_source, prepare_image
from tests.images import samples as s

Check = Callable[[PreparedImage, Image.Image], None]


@dataclass
class Case:
    id: str
    make: Callable[[Path], Any]  # tmp_path -> what a producer hands over
    expect: type[ImageError] | Check
    policy: ImagePolicy | None = None
    words: str = ""  # must appear in the error message


def _photo_jpeg(size: tuple[int, int] = (640, 480)) -> bytes:
    return s.encode(s.photo(size), "JPEG", quality=90)


def _jpeg_bytes() -> bytes:
    return _photo_jpeg()


def _corrupt_jpeg() -> bytes:
    data = bytearray(_jpeg_bytes())
    i = data.index(b"\xff\xc4")  # garble the first Huffman table
    data[i + 4 : i + 30] = bytes(range(200, 226))
    return bytes(data)


def _cmyk_jpeg() -> bytes:
    return s.encode(Image.new("RGB", (120, 80), (200, 30, 30)).convert("CMYK"), "JPEG")


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def size_is(w: int, h: int, mime: str | None = None) -> Check:
    def check(p: PreparedImage, im: Image.Image) -> None:
        assert (p.width, p.height) == (w, h) == im.size
        if mime:
            assert p.mime == mime

    return check


def near(px: tuple[int, ...], want: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(px, want, strict=False))


def _check_gif_first_frame(p: PreparedImage, im: Image.Image) -> None:
    assert p.format == "gif" and im.size == (64, 48)
    assert near(im.convert("RGB").getpixel((5, 5)), (255, 0, 0), 2)  # frame 0 is red


def _check_apng(p: PreparedImage, im: Image.Image) -> None:
    assert near(im.convert("RGB").getpixel((5, 5)), (255, 0, 0), 2)


def _check_cmyk(p: PreparedImage, im: Image.Image) -> None:
    assert im.mode == "RGB" and p.mime == "image/jpeg"
    assert near(im.getpixel((60, 40)), (200, 30, 30))  # not inverted, not washed out


def _check_16bit(p: PreparedImage, im: Image.Image) -> None:
    assert im.mode == "L"
    assert abs(im.getpixel((5, 5)) - 40000 // 257) <= 2  # scaled, not clipped to 255


def _check_palette_alpha(p: PreparedImage, im: Image.Image) -> None:
    assert p.mime == "image/png" and im.mode == "RGBA"
    assert im.getpixel((2, 2))[3] == 0 and im.getpixel((32, 32)) == (255, 0, 0, 255)


def _check_exif_rotated(p: PreparedImage, im: Image.Image) -> None:
    # Stored 4000x3000 left red / right blue, orientation 6 (rotate 90 deg clockwise to view).
    assert (p.original_width, p.original_height) == (3000, 4000)
    assert (p.width, p.height) == im.size == (768, 1024)
    assert near(im.getpixel((384, 100)), (255, 0, 0)) and near(im.getpixel((384, 900)), (0, 0, 255))
    assert not im.getexif()  # orientation applied, EXIF gone


def _check_stripped(p: PreparedImage, im: Image.Image) -> None:
    assert not im.getexif() and "icc_profile" not in im.info and b"imgq-test-camera" not in p.data


def _check_opaque_rgba(p: PreparedImage, im: Image.Image) -> None:
    assert p.mime == "image/jpeg" and im.mode == "RGB"


def _check_line_art(p: PreparedImage, im: Image.Image) -> None:
    assert p.mime == "image/png" and p.tokens == 765 and im.size == (1024, 768)


def _check_jpeg_from_png_photo(p: PreparedImage, im: Image.Image) -> None:
    assert p.format == "png" and p.mime == "image/jpeg"  # photo: JPEG is smaller


def _check_format(fmt: str) -> Check:
    def check(p: PreparedImage, im: Image.Image) -> None:
        assert p.format == fmt and p.mime in ("image/jpeg", "image/png")
        assert (p.width, p.height) == im.size

    return check


def _srgb_tagged_jpeg() -> bytes:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return s.encode(Image.new("RGB", (80, 60), (10, 120, 230)), "JPEG", icc_profile=icc)


def _check_srgb(p: PreparedImage, im: Image.Image) -> None:
    assert "icc_profile" not in im.info and near(im.getpixel((40, 30)), (10, 120, 230), 6)


def _mpo() -> bytes:
    # Phone cameras write MPO (a JPEG plus extra pictures); Pillow calls it animated, it is not.
    frames = [s.photo((200, 150)), Image.new("RGB", (200, 150), "black")]
    return s.encode(frames[0], "MPO", save_all=True, append_images=frames[1:])


def _heic_header() -> bytes:
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


CASES = [
    Case("zero-bytes", lambda t: b"", InvalidImageError, words="empty"),
    Case("zero-byte-file", lambda t: _write(t, "empty.png", b""), InvalidImageError, words="empty"),
    Case(
        "truncated-png",
        lambda t: s.encode(s.photo(), "PNG")[:3000],
        InvalidImageError,
        words="truncated",
    ),
    Case("png-header-only", lambda t: s.encode(s.photo(), "PNG")[:40], InvalidImageError),
    Case("corrupt-jpeg", lambda t: _corrupt_jpeg(), InvalidImageError, words="corrupt"),
    Case("truncated-jpeg", lambda t: _jpeg_bytes()[:5000], InvalidImageError, words="truncated"),
    Case(
        "svg",
        lambda t: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        UnsupportedImageFormatError,
        words="SVG",
    ),
    Case(
        "html-as-image",
        lambda t: _write(t, "photo.jpg", b"<!DOCTYPE html><html>403</html>"),
        InvalidImageError,
        words="HTML",
    ),
    Case("random-bytes", lambda t: bytes(range(256)) * 4, InvalidImageError, words="not an image"),
    Case("pdf", lambda t: b"%PDF-1.7\n" + bytes(100), UnsupportedImageFormatError, words="PDF"),
    Case("png-bomb-30000", lambda t: s.png_bomb(), ImageTooLargeError, words="decompression"),
    Case(
        "png-over-policy-pixels", lambda t: s.png_bomb(12000, 11000), ImageTooLargeError, words="MP"
    ),
    Case(
        "too-many-bytes",
        lambda t: _jpeg_bytes(),
        ImageTooLargeError,
        policy=ImagePolicy(max_bytes=1000),
        words="limit",
    ),
    Case("animated-gif-first-frame", lambda t: s.animated_gif(), _check_gif_first_frame),
    Case(
        "animated-gif-refused",
        lambda t: s.animated_gif(),
        UnsupportedImageFormatError,
        policy=ImagePolicy(animated="refuse"),
        words="animated",
    ),
    Case("apng-first-frame", lambda t: s.apng(), _check_apng),
    Case("cmyk-jpeg", lambda t: _cmyk_jpeg(), _check_cmyk),
    Case("png-16-bit", lambda t: s.gray16(), _check_16bit),
    Case("palette-transparency", lambda t: s.palette_with_transparency(), _check_palette_alpha),
    Case(
        "exif-rotated-photo",
        lambda t: s.jpeg_with_exif(s.halves((4000, 3000), "red", "blue"), 6),
        _check_exif_rotated,
    ),
    Case("gps-exif-stripped", lambda t: s.jpeg_with_exif(s.photo(), 1, gps=True), _check_stripped),
    Case(
        "huge-data-url",
        lambda t: "data:image/png;base64," + "A" * (28 * 1024 * 1024),
        ImageTooLargeError,
    ),
    Case("bad-base64", lambda t: "iVBORw0KGgo!!!not*base64", InvalidImageError),
    Case(
        "data-url-bad-base64",
        lambda t: "data:image/png;base64,@@@@",
        InvalidImageError,
        words="base64",
    ),
    Case(
        "data-url-not-base64",
        lambda t: "data:image/png,rawbytes",
        InvalidImageError,
        words="base64",
    ),
    Case(
        "data-url-lies-about-type",
        lambda t: "data:image/png;base64," + base64.b64encode(_jpeg_bytes()).decode(),
        _check_format("jpeg"),
    ),
    Case("base64-plain", lambda t: base64.b64encode(_jpeg_bytes()).decode(), _check_format("jpeg")),
    Case("missing-file", lambda t: str(t / "nope.png"), InvalidImageError, words="no such file"),
    Case("directory", lambda t: t, InvalidImageError, words="directory"),
    Case(
        "png-named-jpg",
        lambda t: _write(t, "x.jpg", s.encode(s.photo(), "PNG")),
        _check_format("png"),
    ),
    Case("ftp-url", lambda t: "ftp://example.com/a.png", InvalidImageError, words="scheme"),
    Case(
        "heic-without-plugin", lambda t: _heic_header(), UnsupportedImageFormatError, words="HEIC"
    ),
    Case("tiff-converted", lambda t: s.encode(s.photo(), "TIFF"), _check_format("tiff")),
    Case("bmp-converted", lambda t: s.encode(s.photo(), "BMP"), _check_format("bmp")),
    Case(
        "bmp-refused",
        lambda t: s.encode(s.photo(), "BMP"),
        UnsupportedImageFormatError,
        policy=ImagePolicy(exotic="refuse"),
        words="BMP",
    ),
    Case("avif-converted", lambda t: s.encode(s.photo(), "AVIF"), _check_format("avif")),
    Case("webp", lambda t: s.encode(s.photo(), "WEBP"), _check_format("webp")),
    Case(
        "opaque-rgba-png", lambda t: s.encode(s.photo().convert("RGBA"), "PNG"), _check_opaque_rgba
    ),
    Case("line-art-png-kept", lambda t: s.encode(s.line_art(), "PNG"), _check_line_art),
    Case(
        "photo-png-to-jpeg",
        lambda t: s.encode(s.photo((1200, 900)), "PNG"),
        _check_jpeg_from_png_photo,
    ),
    Case("one-pixel", lambda t: s.encode(Image.new("RGB", (1, 1)), "PNG"), size_is(1, 1)),
    Case("very-thin", lambda t: s.encode(Image.new("L", (10000, 10), 99), "PNG"), size_is(2048, 2)),
    Case(
        "bilevel-tiff",
        lambda t: s.encode(Image.new("1", (50, 40), 1), "TIFF"),
        _check_format("tiff"),
    ),
    Case(
        "phone-photo-12mp",
        lambda t: _write(t, "IMG_0001.JPG", _photo_jpeg((4000, 3000))),
        size_is(1024, 768, "image/jpeg"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_catalogue(case: Case, tmp_path: Path) -> None:
    def run() -> tuple[PreparedImage, Image.Image]:
        source = parse_source(case.make(tmp_path))
        assert isinstance(source, BytesSource)
        p = prepare_image(source.data, model="gpt-4o", detail="high", policy=case.policy)
        return p, Image.open(io.BytesIO(p.data))

    if isinstance(case.expect, type):
        with pytest.raises(case.expect) as info:
            run()
        err = info.value
        assert not err.retryable and err.code == case.expect.code
        assert case.words.lower() in err.message.lower()
        assert "object at 0x" not in err.message and len(err.message) < 300
    else:
        prepared, image = run()
        assert prepared.tokens >= 85 and prepared.data_url().startswith(f"data:{prepared.mime};")
        case.expect(prepared, image)


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 25
