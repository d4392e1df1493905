"""``prepare_image``: untrusted bytes in, the exact image the model will see out (or a typed error).

Synchronous and CPU-bound, with no shared state: run it in a thread or process pool.

>>> import io
>>> from PIL import Image
>>> buf = io.BytesIO(); Image.new("RGB", (4000, 3000), "white").save(buf, "JPEG")
>>> p = prepare_image(buf.getvalue(), model="gpt-4o", detail="high")
>>> (p.width, p.height, p.tokens, p.mime)
(1024, 768, 765, 'image/jpeg')
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from PIL import Image

from shared.errors import InvalidJobError
from shared.images.decode import (
    OpenedImage,
    load,
    normalise_mode,
    open_image,
    to_srgb,
    transpose,
)
from shared.images.formats import MIME
from shared.images.policy import ImagePolicy
from shared.images.resize import encode, resize_image, target_size
from shared.vision_tokens import Detail, image_tokens, is_known_model

_LOSSLESS_SOURCES = frozenset({"png", "gif", "bmp", "tiff"})
_DEFAULT_POLICY = ImagePolicy()


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to send: re-encoded, EXIF applied, metadata stripped, model-sized."""

    data: bytes = field(repr=False)
    mime: str
    width: int
    height: int
    tokens: int  # exact: image_tokens(model, width, height, detail) of the image as sent
    original_width: int  # as displayed (after EXIF rotation)
    original_height: int
    original_bytes: int
    format: str  # sniffed source format: png, jpeg, webp, gif, bmp, tiff, avif, heic
    detail: Detail = "auto"  # the detail to send: "low" when a token budget forced it
    model: str = ""

    def data_url(self) -> str:
        """``data:<mime>;base64,...`` for an ``image_url`` / ``input_image`` content part."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def prepare_image(
    data: bytes,
    *,
    model: str,
    detail: Detail,
    max_image_tokens: int | None = None,
    policy: ImagePolicy | None = None,
) -> PreparedImage:
    """Validate, decode and resize ``data`` to what ``model`` sees at ``detail``; re-encode it.

    Raises ``InvalidImageError``, ``UnsupportedImageFormatError`` or ``ImageTooLargeError``
    (``InvalidJobError`` for a model without image token rules).
    Without ``max_image_tokens`` the token count equals that of the original image.
    """
    if not is_known_model(model):
        raise InvalidJobError(f"no image token rules for model {model!r}: cannot size the image")
    policy = policy or _DEFAULT_POLICY
    opened = open_image(data, policy)
    dw, dh = opened.display_size
    tw, th, detail_used = target_size(model, dw, dh, detail, max_image_tokens)
    im = _decode_resized(opened, (tw, th))
    im.info = {}  # nothing of the source's metadata (EXIF, GPS, ICC, text) is written out
    try_png = policy.png_when_smaller and opened.format in _LOSSLESS_SOURCES
    out, out_fmt = encode(im, quality=policy.jpeg_quality, try_png=try_png)
    return PreparedImage(
        data=out,
        mime=MIME[out_fmt],
        width=im.width,
        height=im.height,
        tokens=image_tokens(model, im.width, im.height, detail_used),
        original_width=dw,
        original_height=dh,
        original_bytes=len(data),
        format=opened.format,
        detail=detail_used,
        model=model,
    )


def _decode_resized(opened: OpenedImage, size: tuple[int, int]) -> Image.Image:
    """Decode (JPEG: at a DCT scale), normalise the mode, resize, then rotate the small result."""
    swap = opened.display_size != opened.image.size
    stored = (size[1], size[0]) if swap else size
    im, box = load(opened, stored if stored != opened.image.size else None)
    # Colour-manage after resizing, on the small image; CMYK is converted in normalise_mode.
    icc = im.info.get("icc_profile") if im.mode in ("RGB", "RGBA") else None
    im = normalise_mode(im)
    if box == (0, 0, *im.size):
        box = None
    if im.size != stored or box is not None:
        im = resize_image(im, stored, box)
    im = transpose(im, opened.orientation)
    return to_srgb(im, icc) if icc else im
