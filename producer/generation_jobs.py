"""Generate/edit jobs on the producer side: options split from job fields, checks at submit,
input images stored, output images read back.

Everything the API would refuse is refused here, as a failed job with a typed error and no API
call: options the model does not take (``invalid_job``), edit inputs of the wrong format or size
and masks that are not PNG with alpha at the image's size (``invalid_image``).

>>> opts, rest = split_options({"n": 2, "size": "1024x1024", "priority": "bulk"})
>>> opts.n, opts.size, rest
(2, '1024x1024', {'priority': 'bulk'})
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from producer.submit_request import ImageLike, describe_source
from shared import errors
from shared.catalogue import default_catalogue
from shared.generation import (
    GenerationOptions,
    GenerationSpec,
    Kind,
    OutputImage,
    check_edit_inputs,
    check_options,
    check_tool_options,
)
from shared.images import BytesSource, parse_source
from shared.jobs import ImageSpec, Job, Priority, Result
from shared.prompt_guard import check_prompt
from shared.settings import Settings
from shared.storage import ImageStore

_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def split_options(options: dict[str, Any]) -> tuple[GenerationOptions, dict[str, Any]]:
    """(the Images API options, everything else) from one keyword set."""
    names = set(GenerationOptions.model_fields)
    api = {k: v for k, v in options.items() if k in names and v is not None}
    rest = {k: v for k, v in options.items() if k not in names}
    try:
        return GenerationOptions(**api), rest
    except ValueError as exc:
        raise errors.InvalidJobError(f"invalid generation options: {exc}") from exc


def _read_input(value: ImageLike, settings: Settings, trusted: bool, what: str) -> bytes:
    src = parse_source(value, max_bytes=settings.max_image_bytes, allow_paths=trusted)
    if not isinstance(src, BytesSource):
        # Edit inputs are uploaded with the call: imgq needs their bytes to check them now.
        raise errors.InvalidJobError(
            f"the {what} of an edit must be a file or bytes (uploaded), not a URL or s3:// object"
        )
    return src.data


def _check_responses_model(model: str, edit: bool) -> None:
    if edit:
        raise errors.InvalidJobError("edits go through the Images API (no responses_model)")
    spec = default_catalogue().find(model)
    if spec is None or not spec.supports("responses") or spec.supports("image_generation"):
        raise errors.InvalidJobError(
            f"responses_model: {model!r} is not a Responses API model that can call the "
            "image_generation tool (e.g. gpt-4.1-mini)"
        )


async def build_generation_job(
    *,
    kind: Kind,
    job_id: str,
    prompt: str,
    options: GenerationOptions,
    images: Sequence[ImageLike],
    mask: ImageLike | None,
    metadata: dict[str, Any],
    priority: Priority,
    store: ImageStore,
    settings: Settings,
    trusted: bool,
    responses_model: str | None = None,
    tenant: str | None = None,
    callback_url: str | None = None,
) -> Job:
    """The job to enqueue; raises a typed PermanentError for anything the API would refuse.

    ``responses_model``: generate through the Responses API's image_generation tool on that
    model (one picture per call) instead of the Images API. ``tenant``: the API key's (issue
    11): the worker settles the tenant's budget and weighs its fair share by it.
    ``callback_url``: where the worker POSTs the final document (signed; issue 11's webhooks).
    """
    check_prompt(prompt)
    edit = kind == "edit"
    if responses_model is not None:
        _check_responses_model(responses_model, edit)
        problem = check_tool_options(options, prompt=prompt)
    else:
        problem = check_options(options, prompt=prompt, edit=edit)
    if problem is not None:
        raise errors.InvalidJobError(f"{problem.param}: {problem.message}")
    if not edit and (images or mask is not None):
        raise errors.InvalidJobError("a generate job takes no input images (use an edit job)")
    specs: list[ImageSpec] = []
    mask_ref: str | None = None
    if edit:
        datas = [_read_input(v, settings, trusted, "images") for v in images]
        mask_data = _read_input(mask, settings, trusted, "mask") if mask is not None else None
        # Decoding is CPU work: off the event loop (the HTTP API serves others meanwhile).
        _, problem = await asyncio.to_thread(check_edit_inputs, options.model, datas, mask_data)
        if problem is not None:
            raise errors.InvalidImageError(f"{problem.param}: {problem.message}")
        for value, data in zip(images, datas, strict=True):
            specs.append(ImageSpec(ref=await store.put(data), source=describe_source(value)))
        if mask_data is not None:
            mask_ref = await store.put(mask_data)
    try:
        return Job(
            job_id=job_id,
            kind=kind,
            images=specs,
            prompt=prompt,
            model=responses_model or options.model,
            generation=GenerationSpec(
                options=options,
                mask_ref=mask_ref,
                route="responses" if responses_model else "images",
            ),
            metadata=metadata,
            priority=priority,
            dedup=False,  # each generation is a new picture: never answered from another job
            tenant=tenant,
            callback_url=callback_url,
        )
    except ValueError as exc:
        raise errors.InvalidJobError(f"invalid job: {exc}") from exc


async def output_images(store: ImageStore, result: Result) -> list[tuple[OutputImage, bytes]]:
    """A finished generate/edit job's images with their bytes, read from the image store."""
    return [(img, await store.get(img.ref)) for img in result.images]


def save_images(
    pairs: Sequence[tuple[OutputImage, bytes]], job_id: str, out_dir: Path
) -> list[Path]:
    """Write ``<job_id>-<i>.<ext>`` files into ``out_dir`` (created); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i, (img, data) in enumerate(pairs):
        path = out_dir / f"{job_id}-{i}.{_EXTENSIONS.get(img.format, img.format)}"
        path.write_bytes(data)
        paths.append(path)
    return paths
