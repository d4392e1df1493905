"""What imgq accepts and how it re-encodes: one frozen object, passed in (never global state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.errors import InvalidJobError

AnimatedPolicy = Literal["first_frame", "refuse"]
ExoticPolicy = Literal["convert", "refuse"]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # the API's own per-image limit
# 120 MP covers 108 MP phone sensors; Pillow itself refuses anything over ~179 MP at open.
DEFAULT_MAX_PIXELS = 120_000_000


@dataclass(frozen=True)
class ImagePolicy:
    """Acceptance and encoding rules for one image.

    >>> ImagePolicy(animated="refuse").jpeg_quality
    85
    """

    animated: AnimatedPolicy = "first_frame"  # animated GIF/PNG/WebP: send frame 0, or refuse
    exotic: ExoticPolicy = "convert"  # HEIC/AVIF/TIFF/BMP: convert to JPEG/PNG, or refuse
    jpeg_quality: int = 85
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb limit (width x height)
    max_bytes: int = DEFAULT_MAX_BYTES  # encoded size limit per input image
    png_when_smaller: bool = True  # lossless sources: keep PNG when it beats JPEG (line art)

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 95:
            raise InvalidJobError(f"jpeg_quality must be 1..95, got {self.jpeg_quality}")
        if self.max_pixels < 1 or self.max_bytes < 1:
            raise InvalidJobError("max_pixels and max_bytes must be positive")
