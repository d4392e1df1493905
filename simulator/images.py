"""Image inputs: decode data URLs, fetch loopback URLs, validate like OpenAI, describe cheaply.

Only the header is needed for the size (Pillow opens lazily); the dominant colour comes from a
tiny thumbnail (JPEG decodes at 1/8 scale via ``draft``). Results are cached by content hash, so
benchmarks that resend the same images pay the decode once.

>>> import io; from PIL import Image
>>> buf = io.BytesIO(); Image.new("RGB", (40, 20), (250, 10, 10)).save(buf, "PNG")
>>> info = inspect_image(buf.getvalue())
>>> (info.width, info.height, info.colour, info.orientation)
(40, 20, 'red', 'landscape')
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import ipaddress
import threading
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from PIL import Image, UnidentifiedImageError

from simulator import errors

SUPPORTED = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
_CACHE_SIZE = 2048
# Named colours for the description; the nearest one (RGB distance) to the mean colour wins.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (240, 140, 20),
    "yellow": (235, 220, 40),
    "green": (40, 180, 60),
    "cyan": (40, 200, 210),
    "blue": (30, 60, 220),
    "purple": (140, 60, 190),
    "pink": (245, 140, 190),
    "brown": (125, 80, 40),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "black": (10, 10, 10),
}


@dataclass(frozen=True)
class ImageInfo:
    """What the simulator knows about one decoded image."""

    sha16: str
    width: int
    height: int
    format: str
    colour: str
    rgb_hex: str
    nbytes: int

    @property
    def orientation(self) -> str:
        if self.width == self.height:
            return "square"
        return "landscape" if self.width > self.height else "portrait"


_cache: OrderedDict[bytes, ImageInfo] = OrderedDict()
_cache_lock = threading.Lock()


def _nearest_colour(rgb: tuple[int, int, int]) -> str:
    def distance(name: str) -> int:
        return sum((a - b) ** 2 for a, b in zip(PALETTE[name], rgb, strict=True))

    return min(PALETTE, key=distance)


def _looks_like_svg(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower()


def _decode(data: bytes, sha16: str, param: str | None) -> ImageInfo:
    if _looks_like_svg(data):
        raise errors.invalid_image_format(param, "SVG is not supported")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise errors.invalid_image(param) from None
    except (OSError, ValueError, Image.DecompressionBombError):
        raise errors.invalid_image(param) from None
    with img:
        fmt = img.format or "?"
        if fmt not in SUPPORTED:
            raise errors.invalid_image_format(param, f"{fmt} is not supported")
        if fmt == "GIF" and getattr(img, "is_animated", False):
            raise errors.invalid_image_format(param, "animated GIFs are not supported")
        width, height = img.size
        try:
            # thumbnail() uses draft() (JPEG DCT scaling) and reduce(): cheap, and it decodes the
            # pixels, so truncated or corrupt files are caught here as OpenAI would catch them.
            img.thumbnail((16, 16))
            mean = img.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise errors.invalid_image(param) from None
    assert isinstance(mean, tuple)
    rgb = (int(mean[0]), int(mean[1]), int(mean[2]))
    return ImageInfo(
        sha16=sha16,
        width=width,
        height=height,
        format=fmt,
        colour=_nearest_colour(rgb),
        rgb_hex="#{:02x}{:02x}{:02x}".format(*rgb),
        nbytes=len(data),
    )


def inspect_image(data: bytes, param: str | None = None) -> ImageInfo:
    """Validate and describe image bytes; raises :class:`errors.ApiError` as OpenAI would."""
    if not data:
        raise errors.invalid_image(param)
    digest = hashlib.sha256(data).digest()
    with _cache_lock:
        hit = _cache.get(digest)
        if hit is not None:
            _cache.move_to_end(digest)
            return hit
    info = _decode(data, digest.hex()[:16], param)
    with _cache_lock:
        _cache[digest] = info
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return info


def decode_data_url(url: str, max_bytes: int, param: str | None = None) -> bytes:
    """The file bytes of a ``data:<mime>;base64,<data>`` URL."""
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise errors.invalid_image(param)
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise _too_big(len(payload) * 3 // 4, max_bytes, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise errors.invalid_image(param) from None
    if len(data) > max_bytes:
        raise _too_big(len(data), max_bytes, param)
    return data


def _too_big(size: int, max_bytes: int, param: str | None) -> errors.ApiError:
    return errors.invalid_image_format(param, f"{size} bytes, over the {max_bytes} byte limit")


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def fetch_image_url(
    url: str, session: aiohttp.ClientSession, max_bytes: int, timeout_s: float, param: str | None
) -> bytes:
    """Download an http(s) image; only loopback hosts are reachable (the simulator is offline)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise errors.invalid_image_url(url, "Invalid image URL:", param)
    if not is_loopback_host(parts.hostname):
        # OpenAI would fetch it; the simulator is offline and refuses to reach other hosts (SSRF).
        raise errors.invalid_image_url(url, "Error while downloading", param)
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                raise errors.invalid_image_url(url, "Error while downloading", param)
            chunks: list[bytes] = []
            total = 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                total += len(chunk)
                if total > max_bytes:
                    raise _too_big(total, max_bytes, param)
                chunks.append(chunk)
    except errors.ApiError:
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise errors.invalid_image_url(url, "Timeout while downloading", param) from None
    return b"".join(chunks)
