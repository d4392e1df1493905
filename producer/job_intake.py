"""From a ``SubmitRequest`` to a ``Job`` (checked, images stored) or a small failed record.

The admission half of ``AsyncClient.submit_many``: ``build_job`` runs every check before
anything is stored; ``record_rejected`` writes what a caller reads back for a refused job.
Recording the queued job and sending it stay with the client, which owns the connections.
"""

from __future__ import annotations

import math
import time

from producer.generation_jobs import build_generation_job
from producer.submit_request import ImageInput, SubmitRequest, describe_source
from shared import errors
from shared.admission import (
    MAX_MODEL_NAME_CHARS,
    AdmissionLimits,
    admit_request,
    check_metadata,
)
from shared.catalogue import catalogue_for
from shared.generation import GenerationOptions
from shared.images import BytesSource, S3Source, UrlSource, parse_source
from shared.jobs import ErrorInfo, ImageSpec, Job, Result
from shared.settings import Settings
from shared.storage import ImageStore, JobEvents, ResultStore
from shared.upload_budget import UploadBudget


async def build_job(
    req: SubmitRequest, job_id: str, store: ImageStore, *, settings: Settings, trusted: bool
) -> Job:
    """Every check before paying (shared/admission.py), then the uploads are stored.

    Nothing is stored until all checks passed: a rejected job leaves no image behind.
    ``trusted=False`` (a server's untrusted callers) refuses local paths and s3:// sources.
    """
    s = settings
    limits = AdmissionLimits.from_settings(s)
    d = req.deadline_seconds
    if d is not None and (isinstance(d, bool) or not isinstance(d, int | float)
                          or not math.isfinite(d) or d <= 0):  # fmt: skip
        raise errors.InvalidJobError(
            f"`deadline_seconds` must be a positive number, got {d!r}"[:200]
        )
    if req.stream and (req.kind != "analyze" or req.route == "batch"):
        raise errors.InvalidJobError(
            "`stream` is for vision jobs answered online (not image generation or route batch)"
        )
    if req.kind != "analyze":  # image generation (issue 15) has its own option checks
        check_metadata(req.metadata, limits)
        return await build_generation_job(
            kind=req.kind,
            job_id=job_id,
            prompt=req.prompt,
            options=req.generation or GenerationOptions(),
            images=[i.source if isinstance(i, ImageInput) else i for i in req.images],
            mask=req.mask,
            metadata=req.metadata,
            priority=req.priority,
            store=store,
            settings=s,
            trusted=trusted,
            responses_model=req.responses_model,
            tenant=req.tenant,  # issue 11: the budget is settled by tenant jobs only
            callback_url=req.callback_url,
        )
    model = req.model or s.default_model
    max_output_tokens = req.max_output_tokens or s.default_max_output_tokens
    await admit_request(
        model=model,
        api=req.api,
        prompt=req.prompt,
        max_output_tokens=max_output_tokens,
        json_schema=req.json_schema,
        metadata=req.metadata,
        n_images=len(req.images),
        limits=limits,
        catalogue=catalogue_for(s),
        policy=s.unknown_models,
    )
    budget = UploadBudget(limits)
    specs: list[ImageSpec] = []
    uploads: list[tuple[ImageSpec, bytes]] = []
    for item in req.images:
        inp = item if isinstance(item, ImageInput) else ImageInput(item)
        detail = inp.detail or req.detail
        src = parse_source(inp.source, max_bytes=s.max_image_bytes, allow_paths=trusted)
        spec = ImageSpec(ref="", detail=detail, source=describe_source(inp.source))
        if isinstance(src, UrlSource):
            spec.ref = src.url
        elif isinstance(src, S3Source):
            if not trusted:
                raise errors.ImageUrlForbiddenError(
                    "s3:// images are not accepted here: upload the image or give an https URL"
                )
            spec.ref = f"s3://{src.bucket}/{src.key}"
        else:
            assert isinstance(src, BytesSource)
            await budget.add(src.data)  # sniffed and sized from its header, not stored yet
            uploads.append((spec, src.data))
        specs.append(spec)
    try:
        job = Job(
            job_id=job_id,
            images=specs,
            prompt=req.prompt,
            model=model,
            api=req.api,
            max_output_tokens=max_output_tokens,
            json_schema=req.json_schema,
            metadata=req.metadata,
            priority=req.priority,
            max_image_tokens=req.max_image_tokens,
            dedup=req.dedup,
            route=req.route,
            tenant=req.tenant,
            callback_url=req.callback_url,
            stream=req.stream,
        )
    except ValueError as exc:
        raise errors.InvalidJobError(f"invalid job: {exc}") from exc
    for spec, data in uploads:  # all checks passed: only now is anything stored
        spec.ref = await store.put(data)
    return job


async def record_rejected(
    req: SubmitRequest,
    job_id: str,
    exc: errors.ImgqError,
    *,
    settings: Settings,
    results: ResultStore,
    events: JobEvents,
) -> None:
    """A small failed record: the caller's metadata only if it is within the caps."""
    now = time.time()
    model: str | None = req.model or settings.default_model
    if not isinstance(model, str) or len(model) > MAX_MODEL_NAME_CHARS:
        model = None  # a hostile 100,000-character name is not kept
    failed = Result(job_id=job_id, status="failed", model=model)
    try:
        check_metadata(req.metadata, AdmissionLimits.from_settings(settings))
        failed.metadata = req.metadata
    except errors.ImgqError:
        pass  # oversized, too deep or not JSON: the error says so, the record stays small
    failed.error = ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable)
    failed.timings.queued_at = failed.timings.finished_at = now
    if await results.create(failed) is None:
        await events.publish(job_id, "failed")


__all__ = ["build_job", "describe_source", "record_rejected"]
