"""Load each image of a job from wherever it is, and prepare it off the event loop."""

from __future__ import annotations

import asyncio
import functools
import time

from shared.errors import ImageTooLargeError
from shared.images import ImagePolicy, PreparedImage, fetch_image, prepare_image, read_s3
from shared.jobs import ImageSpec, Job
from shared.storage.s3_store import parse_s3_ref
from shared.vision_tokens import is_known_model
from workers.deps import WorkerDeps

# Token maths for models we have no rules for (OpenAI-compatible servers): gpt-4o's tile rules.
FALLBACK_VISION_MODEL = "gpt-4o"


async def load_image(spec: ImageSpec, deps: WorkerDeps) -> bytes:
    ref = spec.ref
    if ref.startswith(("http://", "https://")):
        return await fetch_image(ref, settings=deps.settings, session=deps.http)
    if ref.startswith("s3://") and not deps.images.handles(ref):
        bucket, key = parse_s3_ref(ref)
        return await asyncio.to_thread(read_s3, bucket, key, settings=deps.settings)
    return await deps.images.get(ref)


async def prepare_job_images(job: Job, deps: WorkerDeps) -> list[PreparedImage]:
    """All images of ``job``, validated and sized to what the model sees (typed errors on bad input)."""
    vision_model = job.model if is_known_model(job.model) else FALLBACK_VISION_MODEL
    loop = asyncio.get_running_loop()
    policy = ImagePolicy(max_bytes=deps.settings.max_image_bytes)
    raw = await asyncio.gather(*(load_image(s, deps) for s in job.images))
    started = time.perf_counter()
    prepared = await asyncio.gather(
        *(
            loop.run_in_executor(
                deps.executor,
                functools.partial(
                    prepare_image,
                    data,
                    model=vision_model,
                    detail=spec.detail,
                    max_image_tokens=job.max_image_tokens,
                    policy=policy,
                ),
            )
            for data, spec in zip(raw, job.images, strict=True)
        )
    )
    m = deps.metrics
    m.image_prepare_seconds.observe(time.perf_counter() - started)
    m.image_bytes_total.labels(stage="original").inc(sum(p.original_bytes for p in prepared))
    total = sum(len(p.data) for p in prepared)
    m.image_bytes_total.labels(stage="sent").inc(total)
    if total > deps.settings.max_job_image_bytes:
        raise ImageTooLargeError(
            f"the job's images add up to {total / 1e6:.1f} MB after resizing;"
            f" the API accepts at most {deps.settings.max_job_image_bytes / 1e6:.0f} MB per request"
        )
    return list(prepared)
