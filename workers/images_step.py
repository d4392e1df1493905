"""Load each image of a job from wherever it is, and prepare it off the event loop, within bounds.

Thumbnails (``INLINE_IMAGE_BYTES``, ``INLINE_DECODE_BYTES``) are prepared on the loop itself.

Memory is bounded per process, whatever the jobs hold: at most ``image_loads_per_process`` images
are loaded (raw bytes in memory) at once, at most ``image_loads_per_job`` of them for one job (its
share of the fetch pool too), and the bytes being decoded (raw + pixel buffers, priced from the
header before decoding) stay within ``decode_budget_bytes``. A reference repeated in a job is
loaded once and prepared once per detail.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.errors import ImageTooLargeError
from shared.images import ImagePolicy, PreparedImage, fetch_image, read_s3
from shared.images.budget import ImageLimits
from shared.images.prepare import finish_image, plan_image
from shared.jobs import ImageSpec, Job
from shared.storage.s3_store import parse_s3_ref
from shared.vision_tokens import Detail, is_known_model
from workers.deps import WorkerDeps

# Token maths for models we have no rules for (OpenAI-compatible servers): gpt-4o's tile rules.
FALLBACK_VISION_MODEL = "gpt-4o"
T = TypeVar("T")
# Thumbnails are prepared on the loop: a hop to the pool and back costs more than the work (a
# 64x48 PNG takes ~0.2 ms; the overhead benchmark's worker CPU per job fell ~20% with this and
# shared/redis_coalesce.py together). Both bounds hold whatever a caller sends: the file's size,
# and the pixel buffers priced from its header before anything is decoded.
INLINE_IMAGE_BYTES = 16 * 1024
INLINE_DECODE_BYTES = 64 * 1024


def image_limits(deps: WorkerDeps) -> ImageLimits:
    """The process's limits (created on the worker loop on first use)."""
    if deps.image_limits is None:
        s = deps.settings
        deps.image_limits = ImageLimits(
            decode_budget_bytes=s.decode_budget_bytes,
            loads=s.image_loads_per_process,
            loads_per_job=s.image_loads_per_job,
        )
    return deps.image_limits


async def load_image(spec: ImageSpec, deps: WorkerDeps) -> bytes:
    ref = spec.ref
    if ref.startswith(("http://", "https://")):
        return await fetch_image(ref, settings=deps.settings, session=deps.http)
    if ref.startswith("s3://") and not deps.images.handles(ref):
        bucket, key = parse_s3_ref(ref)
        return await asyncio.to_thread(read_s3, bucket, key, settings=deps.settings)
    return await deps.images.get(ref)


async def _first_error(coros: list[Awaitable[T]]) -> list[T]:
    """Run ``coros`` together; on the first failure cancel the rest and raise that error."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _JobImages:
    """One job's image loads: deduplicated refs, bounded concurrency, a running byte total."""

    def __init__(self, job: Job, deps: WorkerDeps) -> None:
        self.job = job
        self.deps = deps
        self.limits = image_limits(deps)
        self.slots = asyncio.Semaphore(self.limits.loads_per_job)
        self.model = job.model if is_known_model(job.model) else FALLBACK_VISION_MODEL
        self.policy = ImagePolicy(max_bytes=deps.settings.max_image_bytes)
        self.prepared: dict[tuple[str, Detail], PreparedImage] = {}
        self.sent_bytes = 0

    def _in_pool(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self.deps.executor, fn)

    async def _run(self, fn: Callable[[], T], *, inline: bool) -> T:
        if inline:
            return fn()
        return await self._in_pool(fn)

    async def load_ref(self, spec: ImageSpec, details: list[Detail]) -> None:
        async with self.slots, self.limits.loads:
            data = await load_image(spec, self.deps)
            small = len(data) <= INLINE_IMAGE_BYTES
            for detail in details:
                plan = await self._run(
                    functools.partial(
                        plan_image,
                        data,
                        model=self.model,
                        detail=detail,
                        max_image_tokens=self.job.max_image_tokens,
                        policy=self.policy,
                        max_decode_bytes=self.limits.budget.capacity,
                    ),
                    inline=small,
                )
                async with self.limits.budget.reserve(len(data) + plan.decode_bytes):
                    prepared = await self._run(
                        functools.partial(finish_image, plan, self.policy),
                        inline=small and plan.decode_bytes <= INLINE_DECODE_BYTES,
                    )
                del plan
                self.prepared[(spec.ref, detail)] = prepared
                # Checked as images arrive: a job over the request limit stops loading at once.
                self.sent_bytes += len(prepared.data)
                self.check_total(self.sent_bytes)

    def check_total(self, total: int) -> None:
        cap = self.deps.settings.max_job_image_bytes
        if total > cap:
            raise ImageTooLargeError(
                f"the job's images add up to more than {cap / 1e6:.0f} MB after resizing;"
                f" the API accepts at most {cap / 1e6:.0f} MB per request"
            )


async def prepare_job_images(job: Job, deps: WorkerDeps) -> list[PreparedImage]:
    """All images of ``job``, validated and sized to what the model sees (typed errors on bad input)."""
    run = _JobImages(job, deps)
    wanted: dict[str, tuple[ImageSpec, list[Detail]]] = {}
    for spec in job.images:
        _, details = wanted.setdefault(spec.ref, (spec, []))
        if spec.detail not in details:
            details.append(spec.detail)
    started = time.perf_counter()
    await _first_error([run.load_ref(spec, details) for spec, details in wanted.values()])
    prepared = [run.prepared[(s.ref, s.detail)] for s in job.images]
    total = sum(len(p.data) for p in prepared)  # a repeated image is sent once per mention
    run.check_total(total)
    m = deps.metrics
    m.image_prepare_seconds.observe(time.perf_counter() - started)
    m.image_bytes_total.labels(stage="original").inc(sum(p.original_bytes for p in prepared))
    m.image_bytes_total.labels(stage="sent").inc(total)
    return prepared
