"""Every check that can be made before paying, run at submit: a job that passes them can only
fail later on what the API or an image host says, never on what the caller sent.

Order: the cheap checks on the request's own fields first (model, counts, metadata, schema, prompt
size), then the uploads (magic bytes and header dimensions, never decoded pixels). The caller
stores nothing until all of them passed, so a rejected job leaves nothing behind but its small
failed record. Each cap is a setting (``IMGQ_*``) with the default below and its own error code.

    cap (setting)                        default     error code
    images per job (max_images_per_job)  500         too_many_images
    prompt (max_prompt_bytes)            1 MiB       prompt_too_large
    prompt + max_output_tokens           context     context_length_exceeded
    max_output_tokens                    model max   max_output_tokens_too_large
    uploads (max_job_input_bytes)        100 MiB     job_input_too_large
    upload pixels (max_job_pixels)       1 Gpx       job_pixels_too_large
    metadata (max_metadata_bytes/depth)  16 KiB/16   metadata_too_large
    json_schema (..._bytes/_depth)       64 KiB/32   json_schema_too_large; invalid_json_schema

>>> limits = AdmissionLimits()
>>> check_metadata({"batch": 7, "tags": ["a", "b"]}, limits)
>>> deep: dict[str, object] = {}
>>> node = deep
>>> for _ in range(210):
...     node["x"] = node = {}
>>> check_metadata(deep, limits)
Traceback (most recent call last):
...
shared.errors.JobTooLargeError: metadata is nested more than 16 levels deep (IMGQ_MAX_METADATA_DEPTH)
>>> check_json_schema({"type": "object", "properties": {"n": {"type": "integr"}}}, limits)
Traceback (most recent call last):
...
shared.errors.InvalidJsonSchemaError: json_schema is not a valid JSON Schema: 'integr' is not valid under any of the given schemas (at properties.n.type)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.catalogue import Catalogue, ModelSpec, UnknownPolicy
from shared.errors import (
    InvalidJobError,
    InvalidJsonSchemaError,
    JobTooLargeError,
    UnsupportedByModelError,
)
from shared.images.policy import DEFAULT_MAX_PIXELS, ImagePolicy
from shared.prompt_guard import check_prompt

if TYPE_CHECKING:
    from shared.settings import Settings

MiB = 1024 * 1024
MAX_MODEL_NAME_CHARS = 200
# Prompts larger than this are scanned and tokenised on a thread, not on the caller's loop.
TOKENISE_OFF_LOOP_BYTES = 64 * 1024
# Chat framing OpenAI adds around a prompt (3 per message + 3 for the reply), a safe upper bound.
_FRAMING_TOKENS = 16
_JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class AdmissionLimits:
    """The per-job caps; ``from_settings`` reads them from ``IMGQ_*``."""

    max_images: int = 500
    max_image_bytes: int = 20 * MiB
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_job_input_bytes: int = 100 * MiB
    max_job_pixels: int = 1_000_000_000
    max_prompt_bytes: int = 1 * MiB
    max_metadata_bytes: int = 16 * 1024
    max_metadata_depth: int = 16
    max_json_schema_bytes: int = 64 * 1024
    max_json_schema_depth: int = 32

    @classmethod
    def from_settings(cls, s: Settings) -> AdmissionLimits:
        return cls(
            max_images=s.max_images_per_job,
            max_image_bytes=s.max_image_bytes,
            max_job_input_bytes=s.max_job_input_bytes,
            max_job_pixels=s.max_job_pixels,
            max_prompt_bytes=s.max_prompt_bytes,
            max_metadata_bytes=s.max_metadata_bytes,
            max_metadata_depth=s.max_metadata_depth,
            max_json_schema_bytes=s.max_json_schema_bytes,
            max_json_schema_depth=s.max_json_schema_depth,
        )

    @property
    def image_policy(self) -> ImagePolicy:
        return ImagePolicy(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)


def job_too_large(code: str, message: str) -> JobTooLargeError:
    return JobTooLargeError(message, code=code)


def _check_json(value: object, what: str, code: str, max_bytes: int, max_depth: int) -> int:
    """Size in bytes of ``value`` as JSON; depth and types checked first, without recursion."""
    setting = f"IMGQ_MAX_{what.upper()}"
    stack: list[tuple[object, int]] = [(value, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            depth += 1
            if depth > max_depth:
                raise job_too_large(
                    code, f"{what} is nested more than {max_depth} levels deep ({setting}_DEPTH)"
                )
            # Every member costs at least 2 bytes of JSON: a count past this is over the size.
            nodes += len(item)
            if nodes * 2 > max_bytes:
                raise job_too_large(
                    code, f"{what} is over {max_bytes} bytes as JSON ({setting}_BYTES)"
                )
            if isinstance(item, dict):
                if not all(isinstance(k, str) for k in item):
                    raise InvalidJobError(f"{what}: object keys must be strings")
                stack.extend((v, depth) for v in item.values())
            else:
                stack.extend((v, depth) for v in item)
        elif not isinstance(item, _JSON_SCALARS):
            raise InvalidJobError(f"{what} must be JSON data; found a {type(item).__name__}")
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except ValueError as exc:  # NaN / Infinity are not JSON
        raise InvalidJobError(f"{what} must be JSON data ({exc})") from None
    if size > max_bytes:
        raise job_too_large(
            code, f"{what} is {size} bytes as JSON; at most {max_bytes} ({setting}_BYTES)"
        )
    return size


def check_metadata(metadata: object, limits: AdmissionLimits) -> None:
    """Metadata is a JSON object within the size and depth caps."""
    if not isinstance(metadata, dict):
        raise InvalidJobError("metadata must be a JSON object")
    _check_json(
        metadata,
        "metadata",
        "metadata_too_large",
        limits.max_metadata_bytes,
        limits.max_metadata_depth,
    )


def check_json_schema(schema: object, limits: AdmissionLimits) -> None:
    """A JSON Schema (jsonschema's ``check_schema``) with an object at its root, within caps."""
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise InvalidJsonSchemaError("json_schema must be a JSON object (a JSON Schema)")
    _check_json(
        schema,
        "json_schema",
        "json_schema_too_large",
        limits.max_json_schema_bytes,
        limits.max_json_schema_depth,
    )
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import Draft202012Validator, validator_for

    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(p) for p in exc.path) or "the root"
        raise InvalidJsonSchemaError(
            f"json_schema is not a valid JSON Schema: {exc.message[:300]} (at {where})"
        ) from None
    if schema.get("type") != "object":
        raise InvalidJsonSchemaError(
            'structured outputs need an object at the root: json_schema must have "type": "object"'
        )


def check_model(
    model: object,
    *,
    api: str,
    wants_schema: bool,
    catalogue: Catalogue,
    policy: UnknownPolicy,
) -> ModelSpec:
    """The catalogue entry for ``model``, if it exists (or the policy accepts it) and can do the job."""
    if not isinstance(model, str) or not model or len(model) > MAX_MODEL_NAME_CHARS:
        raise InvalidJobError(f"model must be a name of 1 to {MAX_MODEL_NAME_CHARS} characters")
    spec = catalogue.resolve(model, policy)
    if not spec.supports("vision"):
        what = "generates images" if spec.supports("image_generation") else "does not read images"
        raise UnsupportedByModelError(f"{model} {what}: pick a vision model for image jobs")
    if not (api == "chat" and spec.supports("chat")) and not (
        api == "responses" and spec.supports("responses")
    ):
        raise UnsupportedByModelError(f"{model} does not support the {api!r} API")
    if wants_schema and not spec.supports("structured_outputs"):
        raise UnsupportedByModelError(f"{model} does not support structured outputs (json_schema)")
    return spec


def check_output_tokens(spec: ModelSpec, model: str, max_output_tokens: int) -> None:
    top = spec.max_output_tokens
    if top is not None and max_output_tokens > top:
        raise job_too_large(
            "max_output_tokens_too_large",
            f"max_output_tokens={max_output_tokens} is over {model}'s maximum of {top}",
        )


async def check_prompt_fits(
    prompt: object, spec: ModelSpec, model: str, max_output_tokens: int, limits: AdmissionLimits
) -> None:
    """Size cap in bytes first (bounds the work), then prompt + output within the context window."""
    if not isinstance(prompt, str) or not prompt:
        raise InvalidJobError("prompt must be a non-empty string")
    cap = limits.max_prompt_bytes
    # A character is at least one UTF-8 byte: no need to encode a prompt that is obviously over.
    n_bytes = len(prompt) if len(prompt) > cap else len(prompt.encode("utf-8", "surrogatepass"))
    if n_bytes > cap:
        raise job_too_large(
            "prompt_too_large",
            f"the prompt is over {cap} bytes (IMGQ_MAX_PROMPT_BYTES); send long documents as"
            " several jobs",
        )
    window = spec.context_window
    # Every token is at least one byte, so a prompt this small fits without tokenising it.
    needs_count = window is not None and n_bytes + _FRAMING_TOKENS + max_output_tokens > window
    # The regex scan (~60 ms per MiB) and tokenising (~55 ms per MiB) run on a thread when large.
    if n_bytes > TOKENISE_OFF_LOOP_BYTES:
        tokens = await asyncio.to_thread(_scan_and_count, prompt, needs_count)
    else:
        tokens = _scan_and_count(prompt, needs_count)
    if window is None or tokens is None:
        return
    if tokens + _FRAMING_TOKENS + max_output_tokens > window:
        raise job_too_large(
            "context_length_exceeded",
            f"the prompt is {tokens} tokens; with max_output_tokens={max_output_tokens} it does"
            f" not fit {model}'s context window of {window} tokens (images add more)",
        )


def _scan_and_count(prompt: str, count: bool) -> int | None:
    """Refuse an image pasted as text; then the prompt's tokens if ``count``."""
    check_prompt(prompt)
    if not count:
        return None
    from shared.text_tokens import count_tokens  # tiktoken: only when a prompt needs counting

    return count_tokens(prompt)


async def admit_request(
    *,
    model: str,
    api: str,
    prompt: object,
    max_output_tokens: int,
    json_schema: object,
    metadata: object,
    n_images: int,
    limits: AdmissionLimits,
    catalogue: Catalogue,
    policy: UnknownPolicy,
) -> ModelSpec:
    """All checks on a request's own fields (everything but the image bytes); cheap ones first."""
    spec = check_model(
        model, api=api, wants_schema=json_schema is not None, catalogue=catalogue, policy=policy
    )
    if n_images < 1:
        raise InvalidJobError("a job needs at least one image")
    if n_images > limits.max_images:
        raise job_too_large(
            "too_many_images",
            f"{n_images} images in one job; at most {limits.max_images} (IMGQ_MAX_IMAGES_PER_JOB)",
        )
    check_metadata(metadata, limits)
    check_json_schema(json_schema, limits)
    check_output_tokens(spec, model, max_output_tokens)
    await check_prompt_fits(prompt, spec, model, max_output_tokens, limits)
    return spec


__all__ = [
    "AdmissionLimits",
    "admit_request",
    "check_json_schema",
    "check_metadata",
    "check_model",
    "check_output_tokens",
    "check_prompt_fits",
]
