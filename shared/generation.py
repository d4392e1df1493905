"""Image generation/edit options and their checks, shared by imgq's submit path and the simulator.

The checks follow the Images API: a problem names the parameter, a message and the API's code,
so the simulator answers it as a 400 and imgq refuses the job at submit without an API call.

>>> check_options(GenerationOptions(model="dall-e-3", n=2), prompt="a fox", edit=False).message
'You must provide n=1 for this model.'
>>> check_options(GenerationOptions(size="512x512"), prompt="a fox", edit=False).param
'size'
>>> check_options(GenerationOptions(size="1536x1024", quality="high"), prompt="a fox", edit=False)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from shared.image_models import IMAGE_MODELS, image_model

if TYPE_CHECKING:
    from PIL import Image

Kind = Literal["analyze", "generate", "edit"]
MAX_MASK_BYTES = 4 * 1024 * 1024


class GenerationOptions(BaseModel):
    """The Images API's options for one generate/edit call (unset: the API's default)."""

    model: str = "gpt-image-1"
    n: int = 1
    size: str | None = None
    quality: str | None = None
    background: str | None = None  # transparent | opaque | auto (gpt-image-1)
    output_format: str | None = None  # png | jpeg | webp (gpt-image-1)
    output_compression: int | None = Field(default=None)  # 0-100, jpeg/webp (gpt-image-1)
    moderation: str | None = None  # auto | low (gpt-image-1)
    style: str | None = None  # vivid | natural (dall-e-3)
    response_format: str | None = None  # url | b64_json (DALL·E)

    def api_params(self) -> dict[str, str | int]:
        """The options as request parameters (unset ones left out, as the SDK would)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class GenerationSpec(BaseModel):
    """What a generate/edit job asks for beyond its prompt: API options, and an edit's mask."""

    options: GenerationOptions = Field(default_factory=GenerationOptions)
    mask_ref: str | None = None  # image-store ref of the mask (edits; applies to the first image)
    # "images": the Images API; "responses": the Responses API's image_generation tool, called
    # on the job's (mainline) model, one picture per call, options as gpt-image-1's.
    route: Literal["images", "responses"] = "images"


class OutputImage(BaseModel):
    """One generated image as a result carries it: where it is stored and what it is."""

    ref: str  # image-store ref (redis:... or s3://...), content-addressed
    url: str | None = None  # short-lived presigned URL (S3 store) or the API's own URL
    width: int
    height: int
    format: str  # png | jpeg | webp
    nbytes: int
    sha256: str
    revised_prompt: str | None = None


@dataclass(frozen=True)
class OptionProblem:
    """Why the API would refuse a request: the parameter, OpenAI's message and code."""

    param: str | None
    message: str
    code: str | None = "invalid_value"


def _supported(value: str, allowed: tuple[str, ...]) -> str:
    quoted = [f"'{a}'" for a in allowed]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
    return f"Invalid value: '{value}'. Supported values are: {listed}."


def _unknown(param: str) -> OptionProblem:
    return OptionProblem(param, f"Unknown parameter: '{param}'.", "unknown_parameter")


def check_options(opts: GenerationOptions, *, prompt: str, edit: bool) -> OptionProblem | None:
    """The first problem the API would report for these options, or None when they are valid."""
    models = tuple(m for m in IMAGE_MODELS if not edit or IMAGE_MODELS[m].edits)
    if opts.model not in models:
        return OptionProblem("model", _supported(opts.model, models))
    spec = image_model(opts.model)
    if not prompt:
        return OptionProblem(
            "prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter"
        )
    if len(prompt) > spec.max_prompt_chars:
        return OptionProblem(
            "prompt",
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{spec.max_prompt_chars}, but got a string with length {len(prompt)} instead.",
            "string_above_max_length",
        )
    if spec.max_n == 1 and opts.n != 1:
        return OptionProblem("n", "You must provide n=1 for this model.")
    if not 1 <= opts.n <= spec.max_n:
        return OptionProblem(
            "n",
            f"Invalid 'n': expected a value between 1 and {spec.max_n}, but got {opts.n} instead.",
            "integer_out_of_range",
        )
    if opts.size is not None and opts.size not in spec.sizes:
        return OptionProblem("size", _supported(opts.size, spec.sizes))
    if opts.quality is not None and opts.quality not in spec.qualities:
        return OptionProblem("quality", _supported(opts.quality, spec.qualities))
    return _check_model_specific(opts, spec.backgrounds, edit)


def _check_model_specific(
    opts: GenerationOptions, gpt_image: bool, edit: bool
) -> OptionProblem | None:
    spec = image_model(opts.model)
    if gpt_image:
        if opts.response_format is not None:
            return _unknown("response_format")
        if opts.style is not None:
            return _unknown("style")
        for param, value, allowed in (
            ("background", opts.background, ("transparent", "opaque", "auto")),
            ("output_format", opts.output_format, spec.output_formats),
            ("moderation", opts.moderation, ("low", "auto")),
        ):
            if value is not None and value not in allowed:
                return OptionProblem(param, _supported(value, allowed))
        fmt = opts.output_format or "png"
        if opts.output_compression is not None:
            if fmt == "png":
                return OptionProblem(
                    "output_compression",
                    "Compression less than 100 is not supported for PNG output format.",
                )
            if not 0 <= opts.output_compression <= 100:
                return OptionProblem(
                    "output_compression",
                    "Invalid 'output_compression': expected a value between 0 and 100.",
                    "integer_out_of_range",
                )
        if opts.background == "transparent" and fmt == "jpeg":
            return OptionProblem(
                "background", "Transparent background is not supported for jpeg output format."
            )
        if edit and opts.moderation is not None:
            return _unknown("moderation")
        return None
    for param in ("background", "output_format", "output_compression", "moderation"):
        if getattr(opts, param) is not None:
            return _unknown(param)
    if opts.style is not None:
        if not spec.styles:
            return _unknown("style")
        if opts.style not in spec.styles:
            return OptionProblem("style", _supported(opts.style, spec.styles))
    if opts.response_format is not None and opts.response_format not in ("url", "b64_json"):
        return OptionProblem(
            "response_format", _supported(opts.response_format, ("url", "b64_json"))
        )
    return None


TOOL_MODEL = "gpt-image-1"  # the model behind the Responses API's image_generation tool


def check_tool_options(opts: GenerationOptions, *, prompt: str) -> OptionProblem | None:
    """Problems of options for the image_generation tool: gpt-image-1's, one image per call.

    >>> check_tool_options(GenerationOptions(n=2), prompt="a fox").message
    'The image_generation tool makes one image per call: use n=1.'
    """
    if opts.model != TOOL_MODEL:
        return OptionProblem("model", f"The image_generation tool uses {TOOL_MODEL}.")
    if opts.n != 1:
        return OptionProblem("n", "The image_generation tool makes one image per call: use n=1.")
    return check_options(opts, prompt=prompt, edit=False)


@dataclass(frozen=True)
class EditImage:
    """What a check learnt about one input image: its format and size."""

    format: str
    width: int
    height: int


def _open(data: bytes, param: str) -> tuple[Image.Image | None, OptionProblem | None]:
    from PIL import Image, UnidentifiedImageError  # only edits decode; jobs.py imports us

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None, OptionProblem(
            param,
            "Invalid image file or mode for image 1, please check your image file.",
            "invalid_image_file",
        )
    return img, None


def check_edit_inputs(
    model: str, images: list[bytes], mask: bytes | None
) -> tuple[list[EditImage], OptionProblem | None]:
    """Check edit inputs as the API does: count, format, byte size; a PNG mask with alpha the
    same size as the first image. Returns what was learnt and the first problem (or None)."""
    spec = image_model(model)
    seen: list[EditImage] = []
    if not images:
        return seen, OptionProblem(
            "image", "Missing required parameter: 'image'.", "missing_required_parameter"
        )
    if len(images) > spec.max_edit_images:
        return seen, OptionProblem(
            "image",
            f"Too many images: {len(images)}. {model} accepts at most {spec.max_edit_images}.",
            "too_many_images",
        )
    for data in images:
        if len(data) > spec.max_edit_image_bytes:
            limit_mb = spec.max_edit_image_bytes // (1024 * 1024)
            return seen, OptionProblem(
                "image", f"Invalid image: must be less than {limit_mb} MB.", "image_too_large"
            )
        img, problem = _open(data, "image")
        if problem is not None or img is None:
            return seen, problem
        with img:
            fmt, (w, h) = img.format or "?", img.size
        if fmt not in spec.edit_formats:
            kinds = ", ".join(f.lower() for f in spec.edit_formats)
            return seen, OptionProblem(
                "image",
                f"Invalid input image - format must be in [{kinds}], got {fmt.lower()}.",
                "invalid_image_format",
            )
        if spec.edit_square and w != h:
            return seen, OptionProblem(
                "image", "Invalid input image - image must be square.", "invalid_image"
            )
        seen.append(EditImage(fmt, w, h))
    if mask is not None:
        return seen, _check_mask(mask, seen[0])
    return seen, None


def _check_mask(mask: bytes, first: EditImage) -> OptionProblem | None:
    if len(mask) > MAX_MASK_BYTES:
        return OptionProblem("mask", "Invalid mask: must be less than 4 MB.", "image_too_large")
    img, problem = _open(mask, "mask")
    if problem is not None or img is None:
        return problem
    with img:
        fmt, size = img.format, img.size
        has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    if fmt != "PNG":
        return OptionProblem("mask", "Invalid mask: must be a PNG file.", "invalid_image_format")
    if not has_alpha:
        return OptionProblem(
            "mask", "Invalid mask: the mask must have an alpha channel.", "invalid_image"
        )
    if size != (first.width, first.height):
        return OptionProblem(
            "mask",
            f"Invalid mask: mask size {size[0]}x{size[1]} does not match image size "
            f"{first.width}x{first.height}; they must have the same dimensions.",
            "invalid_image",
        )
    return None
