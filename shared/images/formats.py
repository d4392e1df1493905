"""Image format detection by magic bytes: what a file *is*, never what its name or sender claims.

>>> sniff(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(20))
'png'
>>> sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
'svg'
>>> sniff(b"hello") is None
True
"""

from __future__ import annotations

from typing import Final

# Formats the API takes as they are (after our re-encode).
NATIVE: Final = frozenset({"png", "jpeg", "webp", "gif"})
# Formats we can decode and convert, when the policy allows it.
CONVERTIBLE: Final = frozenset({"bmp", "tiff", "avif", "heic"})
# Pillow's plugin name for each format we open, so a file never reaches another decoder.
PIL_FORMAT: Final = {
    "png": "PNG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
    "avif": "AVIF",
    "heic": "HEIF",
}
MIME: Final = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "avif": "image/avif",
    "heic": "image/heic",
    "svg": "image/svg+xml",
    "html": "text/html",
    "pdf": "application/pdf",
}
# Recognised so the error can say what the file is; never decoded.
_KNOWN_OTHER: Final = {
    b"%PDF-": "pdf",
    b"PK\x03\x04": "zip",
    b"\x1f\x8b": "gzip",
    b"\x00\x00\x01\x00": "ico",
    b"8BPS": "psd",
    b"\x00\x00\x00\x0cjP  ": "jpeg2000",
    b"\xff\x4f\xff\x51": "jpeg2000",
    b"II*\x00\x10\x00\x00\x00CR": "raw",  # Canon CR2 (a TIFF variant we do not want to half-decode)
}
_HEIC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})


def _sniff_isobmff(data: bytes) -> str | None:
    # ISO base media file: size(4) 'ftyp' major-brand(4) minor(4) compatible-brands(4 each).
    if data[4:8] != b"ftyp":
        return None
    box_len = int.from_bytes(data[0:4], "big")
    brands = [data[8:12]]
    end = min(max(box_len, 16), len(data), 64)
    brands += [data[i : i + 4] for i in range(16, end - 3, 4)]
    if any(b in _AVIF_BRANDS for b in brands):
        return "avif"
    if any(b in _HEIC_BRANDS for b in brands):
        return "heic"
    return "video" if data[8:10] in (b"mp", b"qt", b"is", b"M4") else None


def _sniff_text(data: bytes) -> str | None:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "svg"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<?xml")):
        return "html"
    if head.startswith((b"{", b"[")):
        return "json"
    return None


def sniff(data: bytes) -> str | None:
    """The format of ``data`` from its first bytes: a key of ``MIME`` or another name, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    for magic, name in _KNOWN_OTHER.items():
        if data.startswith(magic):
            return name
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:2] == b"BM" and len(data) >= 26 and data[14] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"
    return _sniff_isobmff(data) or _sniff_text(data)


def describe(fmt: str | None) -> str:
    """A human name for a sniffed format, for error messages."""
    names = {
        None: "not a recognised image format",
        "svg": "an SVG (vector) image",
        "html": "an HTML page",
        "json": "JSON text",
        "pdf": "a PDF document",
        "zip": "a ZIP archive",
        "gzip": "a gzip archive",
        "video": "a video file",
    }
    return names.get(fmt, f"a {str(fmt).upper()} file")
