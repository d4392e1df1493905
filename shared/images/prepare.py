"""``prepare_image``: untrusted bytes in, the exact image the model will see out (or a typed error).

Synchronous and CPU-bound, with no shared state: run it in a thread or process pool. In two steps
(``plan_image`` reads the header and prices the decode; ``finish_image`` decodes) a caller can
reserve memory for the decode between them, as the worker does (``shared.images.budget``).

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

from shared.errors import ImageTooLargeError, InvalidJobError
from shared.images.decode import (
    OpenedImage,
    apply_draft,
    decode_bytes,
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
# Decoding a 120 MP colour PNG (a 466 KB "bomb") takes ~1 GB and 2 s: price it from the header
# and refuse. 512 MiB admits ~67 MP colour PNGs; JPEGs decode at a DCT scale, so they pass.
DEFAULT_MAX_DECODE_BYTES = 512 * 1024 * 1024


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


@dataclass
class ImagePlan:
    """An image whose header is read and whose decode is priced, not yet decoded."""

    opened: OpenedImage = field(repr=False)
    target: tuple[int, int]  # as displayed
    original_size: tuple[int, int]  # as displayed, before any JPEG draft scale
    detail: Detail
    model: str
    box: tuple[float, float, float, float] | None  # JPEG draft: the picture inside the decode
    decode_bytes: int  # peak pixel-buffer bytes of finish_image (shared.images.decode)
    original_bytes: int


def plan_image(
    data: bytes,
    *,
    model: str,
    detail: Detail,
    max_image_tokens: int | None = None,
    policy: ImagePolicy | None = None,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> ImagePlan:
    """Validate ``data``, read its header and price the decode; cheap (no pixel is decoded).

    Raises the errors of ``prepare_image``; ``ImageTooLargeError`` when decoding would need more
    than ``max_decode_bytes`` of pixel buffers.
    """
    if not is_known_model(model):
        raise InvalidJobError(f"no image token rules for model {model!r}: cannot size the image")
    opened = open_image(data, policy or _DEFAULT_POLICY)
    dw, dh = opened.display_size
    tw, th, detail_used = target_size(model, dw, dh, detail, max_image_tokens)
    box = apply_draft(opened, (th, tw) if opened.swaps_axes else (tw, th))
    cost = decode_bytes(opened)
    if cost > max_decode_bytes:
        w, h = opened.image.size
        raise ImageTooLargeError(
            f"the image is {w}x{h} ({opened.format.upper()}, {opened.image.mode}): decoding it "
            f"needs ~{cost / 2**20:.0f} MiB, over the {max_decode_bytes / 2**20:.0f} MiB decode "
            "limit (a decompression bomb, or a huge image: send it smaller or as JPEG)"
        )
    return ImagePlan(opened, (tw, th), (dw, dh), detail_used, model, box, cost, len(data))


def finish_image(plan: ImagePlan, policy: ImagePolicy | None = None) -> PreparedImage:
    """Decode, resize and re-encode a planned image (the CPU- and memory-heavy step)."""
    policy = policy or _DEFAULT_POLICY
    opened = plan.opened
    dw, dh = plan.original_size
    im = _decode_resized(opened, plan.target, drafted=True, box=plan.box)
    im.info = {}  # nothing of the source's metadata (EXIF, GPS, ICC, text) is written out
    try_png = policy.png_when_smaller and opened.format in _LOSSLESS_SOURCES
    out, out_fmt = encode(im, quality=policy.jpeg_quality, try_png=try_png)
    return PreparedImage(
        data=out,
        mime=MIME[out_fmt],
        width=im.width,
        height=im.height,
        tokens=image_tokens(plan.model, im.width, im.height, plan.detail),
        original_width=dw,
        original_height=dh,
        original_bytes=plan.original_bytes,
        format=opened.format,
        detail=plan.detail,
        model=plan.model,
    )


def prepare_image(
    data: bytes,
    *,
    model: str,
    detail: Detail,
    max_image_tokens: int | None = None,
    policy: ImagePolicy | None = None,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> PreparedImage:
    """Validate, decode and resize ``data`` to what ``model`` sees at ``detail``; re-encode it.

    Raises ``InvalidImageError``, ``UnsupportedImageFormatError`` or ``ImageTooLargeError``
    (``InvalidJobError`` for a model without image token rules).
    Without ``max_image_tokens`` the token count equals that of the original image.
    """
    plan = plan_image(
        data,
        model=model,
        detail=detail,
        max_image_tokens=max_image_tokens,
        policy=policy,
        max_decode_bytes=max_decode_bytes,
    )
    return finish_image(plan, policy)


def _decode_resized(
    opened: OpenedImage,
    size: tuple[int, int],
    *,
    drafted: bool = False,
    box: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """Decode (JPEG: at a DCT scale), normalise the mode, resize, then rotate the small result.

    ``drafted``: ``plan_image`` already set the JPEG scale (and found ``box``).
    """
    stored = (size[1], size[0]) if opened.swaps_axes else size
    if not drafted:
        box = apply_draft(opened, stored)
    im, _ = load(opened, None)
    # Colour-manage after resizing, on the small image; CMYK is converted in normalise_mode.
    icc = im.info.get("icc_profile") if im.mode in ("RGB", "RGBA") else None
    im = normalise_mode(im)
    if box == (0, 0, *im.size):
        box = None
    if im.size != stored or box is not None:
        im = resize_image(im, stored, box)
    im = transpose(im, opened.orientation)
    return to_srgb(im, icc) if icc else im
