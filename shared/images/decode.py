"""Safe decoding: magic-byte check, bomb limit, one decoder per format, and mode normalisation.

Every failure becomes a typed permanent error with a message a person understands; nothing here
retries or reaches the API. Pillow is only ever asked to open the format the bytes claim to be.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageCms

from shared.errors import ImageTooLargeError, InvalidImageError, UnsupportedImageFormatError
from shared.images.formats import CONVERTIBLE, NATIVE, PIL_FORMAT, describe, sniff
from shared.images.policy import ImagePolicy

# Errors Pillow raises on bad data (it has no single base class for them).
DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_SWAPPING_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})
_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _reason(exc: BaseException) -> str:
    # Pillow's messages can embed object reprs ("<_io.BytesIO object at 0x...>"): keep the gist.
    text = re.sub(r"\s*<[^>]*object at 0x[0-9a-f]+>", "", str(exc)).strip()
    if text.startswith("cannot identify image file"):
        return "no readable image header"
    return text or type(exc).__name__


def _bomb(exc: BaseException) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"the image is too large to decode safely (a decompression bomb?): {_reason(exc)}"
    )


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


@dataclass
class OpenedImage:
    """A validated image whose header is read but whose pixels are not decoded yet."""

    image: Image.Image
    format: str  # our name: png, jpeg, webp, gif, bmp, tiff, avif, heic
    orientation: int  # EXIF orientation 1..8 (1 = as stored)

    @property
    def swaps_axes(self) -> bool:
        """True when the EXIF orientation turns the stored image by 90 degrees."""
        return self.orientation in _SWAPPING_ORIENTATIONS

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as a person sees the image (after EXIF rotation)."""
        w, h = self.image.size
        return (h, w) if self.swaps_axes else (w, h)


def check_format(data: bytes, policy: ImagePolicy) -> str:
    """The sniffed format of ``data`` if imgq accepts it under ``policy``; raise otherwise."""
    if not data:
        raise InvalidImageError("the image is empty (0 bytes)")
    if len(data) > policy.max_bytes:
        raise ImageTooLargeError(
            f"the image is {_mb(len(data))}, over the {_mb(policy.max_bytes)} limit per image"
        )
    fmt = sniff(data)
    if fmt in NATIVE:
        assert fmt is not None
        return fmt
    if fmt == "svg":
        raise UnsupportedImageFormatError(
            "SVG vector images are not supported: export it as PNG first"
        )
    if fmt == "html":
        raise InvalidImageError(
            "this is an HTML page, not an image (an error or login page served as the image?)"
        )
    if fmt in CONVERTIBLE:
        assert fmt is not None
        if policy.exotic == "refuse":
            raise UnsupportedImageFormatError(
                f"{fmt.upper()} images are refused by policy: send PNG, JPEG, WEBP or GIF"
            )
        if fmt == "heic" and not _heif_available():
            raise UnsupportedImageFormatError(
                "HEIC images cannot be decoded here (the pillow-heif plugin is not installed): "
                "convert it to JPEG first"
            )
        return fmt
    if fmt is None:
        raise InvalidImageError(
            f"not an image: the data ({len(data)} bytes) matches no known image format "
            f"(it starts with {data[:8]!r})"
        )
    raise UnsupportedImageFormatError(
        f"this is {describe(fmt)}, not a supported image (PNG, JPEG, WEBP, GIF)"
    )


def _heif_available() -> bool:
    # HEIC needs the optional pillow-heif plugin; registering it twice is harmless.
    try:
        import pillow_heif  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def open_image(data: bytes, policy: ImagePolicy) -> OpenedImage:
    """Validate ``data`` and read its header; pixels are decoded later by ``load``."""
    fmt = check_format(data, policy)
    try:
        with warnings.catch_warnings():
            # Our own limit (policy.max_pixels) decides; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[PIL_FORMAT[fmt]])
    except Image.DecompressionBombError as exc:
        raise _bomb(exc) from None
    except DECODE_ERRORS as exc:
        raise InvalidImageError(
            f"the {fmt.upper()} file is corrupt or truncated and cannot be read ({_reason(exc)})"
        ) from None
    w, h = im.size
    if w < 1 or h < 1:
        raise InvalidImageError(f"the image has no pixels ({w}x{h})")
    if w * h > policy.max_pixels:
        raise ImageTooLargeError(
            f"the image is {w}x{h} = {w * h / 1e6:.0f} MP, over the "
            f"{policy.max_pixels / 1e6:.0f} MP limit (a decompression bomb, or a huge scan)"
        )
    # MPO (phone JPEGs with a depth map or preview) is "animated" to Pillow but is one photo.
    animated = getattr(im, "is_animated", False) and im.format != "MPO"
    if animated and policy.animated == "refuse":
        raise UnsupportedImageFormatError(
            f"animated {fmt.upper()} images are refused by policy: send a still image"
        )
    return OpenedImage(im, fmt, _orientation(im))


def _orientation(im: Image.Image) -> int:
    try:
        if im.format == "PNG":
            # PngImageFile.getexif() decodes every pixel to look for an eXIf chunk after the
            # image data (a 120 MP bomb: 0.7 s, 500 MB); read only the one before it.
            exif = Image.Exif()
            raw = im.info.get("exif")
            if isinstance(raw, bytes):
                exif.load(raw)
        else:
            exif = im.getexif()
        value = exif.get(0x0112, 1)
    except DECODE_ERRORS:
        return 1  # a broken EXIF block does not make the pixels unusable
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_draft(
    opened: OpenedImage, draft_size: tuple[int, int]
) -> tuple[float, float, float, float] | None:
    """JPEG only: decode later at the smallest DCT scale still >= ``draft_size`` (stored axes).

    Nothing is decoded yet; ``opened.image.size`` becomes the size that will be decoded. Returns
    the box of the original picture inside it (the scaled decode pads edges), or None.
    """
    im = opened.image
    if opened.format != "jpeg" or draft_size == im.size:
        return None
    try:
        res = im.draft("RGB" if im.mode == "RGB" else None, draft_size)
    except DECODE_ERRORS as exc:
        raise InvalidImageError(
            f"the JPEG data is corrupt and cannot be decoded ({_reason(exc)})"
        ) from None
    return res[1] if res is not None else None


def decode_bytes(opened: OpenedImage) -> int:
    """Peak bytes of pixel buffers that decoding and normalising ``opened`` may hold at once.

    Known from the header alone (after ``apply_draft``), so a decompression bomb is priced
    before a single pixel is decoded: the decoded frame (Pillow keeps 1, 2 or 4 bytes a pixel)
    plus one converted copy (the mode normalisation or the first resize step).

    >>> from PIL import Image
    >>> decode_bytes(OpenedImage(Image.new("RGB", (100, 50)), "png", 1))
    40000
    >>> decode_bytes(OpenedImage(Image.new("L", (100, 50)), "png", 1))
    10000
    """
    im = opened.image
    w, h = im.size
    mode = im.mode
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    converted = 1 if mode in ("1", "L") else 4
    return w * h * (stored + converted)


def load(
    opened: OpenedImage, draft_size: tuple[int, int] | None
) -> tuple[Image.Image, tuple[float, float, float, float] | None]:
    """Decode frame 0; a JPEG at the smallest DCT scale still >= ``draft_size`` (stored axes).

    Returns the image and the box of the original picture inside it (JPEG draft pads edges).
    """
    im = opened.image
    box = None
    try:
        if draft_size is not None and opened.format == "jpeg":
            res = im.draft("RGB" if im.mode == "RGB" else None, draft_size)
            box = res[1] if res is not None else None
        im.seek(0)
        im.load()
    except Image.DecompressionBombError as exc:
        raise _bomb(exc) from None
    except DECODE_ERRORS as exc:
        raise InvalidImageError(
            f"the {opened.format.upper()} data is corrupt or truncated and cannot be decoded "
            f"({_reason(exc)})"
        ) from None
    return im, box


def normalise_mode(im: Image.Image) -> Image.Image:
    """RGB, RGBA, L or LA: what JPEG/PNG encoders and the model expect (alpha dropped if opaque)."""
    mode = im.mode
    icc = im.info.get("icc_profile")
    if mode == "CMYK":
        im = to_srgb(im, icc) if icc else im.convert("RGB")
    elif mode in ("1", "L", "RGB", "RGBA", "LA"):
        if mode == "1":
            im = im.convert("L")
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "RGBa", "RGBX"):
        im = im.convert("RGB" if mode == "RGBX" else "RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode.startswith("I") or mode == "F":
        im = _to_8bit(im)
    else:  # YCbCr, LAB, HSV and other exotic modes
        im = im.convert("RGB")
    if im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema() == (255, 255):
        im = im.convert("RGB" if im.mode == "RGBA" else "L")
    return im


def _to_8bit(im: Image.Image) -> Image.Image:
    # 16-bit and float greyscale: scale the real range down instead of clipping at 255.
    if im.mode == "F":
        extrema = im.getextrema()
        lo, hi = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
        scale = 255.0 / (hi - lo) if hi != lo else 0.0
        return im.point(lambda v: (v - lo) * scale).convert("L")
    wide = im.convert("I")
    return wide.point(lambda v: v * (1 / 257)).convert("L")


def transpose(im: Image.Image, orientation: int) -> Image.Image:
    """Apply EXIF ``orientation`` (done after resizing: it is cheaper on the small image)."""
    method = _TRANSPOSE.get(orientation)
    return im.transpose(method) if method is not None else im


def _is_srgb(icc: bytes) -> bool:
    try:
        desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, TypeError):
        return True  # an unreadable profile: keep the pixels as they are
    return "srgb" in desc.lower()


def to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert pixels tagged with a non-sRGB ICC profile to sRGB, since the profile is stripped."""
    out_mode = "RGBA" if im.mode in ("RGBA", "LA") else "RGB"
    if not icc or (im.mode != "CMYK" and _is_srgb(icc)):
        return im if im.mode in ("RGB", "RGBA", "L", "LA") else im.convert(out_mode)
    if im.mode in ("L", "LA"):
        return im  # greyscale profiles: converting would only add colour channels
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(im, src, dst, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im.convert(out_mode)
    assert out is not None
    return out
