"""The Python client: submit image jobs, read and wait for their results. Async and sync.

>>> from producer.client import Client                      # doctest: +SKIP
>>> with Client() as c:
...     job_id = c.submit(["photo.jpg"], "What is in this image?")
...     print(c.wait(job_id, timeout=60).output_text)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from celery import Celery

from shared import errors
from shared.embedded_redis import resolve_redis_url
from shared.images import BytesSource, S3Source, UrlSource, parse_source
from shared.jobs import Api, ErrorInfo, ImageSpec, Job, Priority, Result, new_job_id
from shared.loop_thread import LoopThread
from shared.prompt_guard import check_prompt
from shared.settings import Settings
from shared.storage import ImageStore, JobEvents, ResultStore, build_stores, iter_results
from shared.vision_tokens import Detail
from workers.celery_app import TASK_NAME, create_celery

ImageLike = str | bytes | os.PathLike[str]


@dataclass
class ImageInput:
    """An image and the detail to send it at (``None``: the request's default)."""

    source: ImageLike
    detail: Detail | None = None


@dataclass
class SubmitRequest:
    images: Sequence[ImageLike | ImageInput]
    prompt: str
    model: str | None = None
    detail: Detail = "auto"
    api: Api = "chat"
    max_output_tokens: int | None = None
    json_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    priority: Priority = "interactive"
    job_id: str | None = None
    max_image_tokens: int | None = None
    dedup: bool = True


def _describe(value: ImageLike) -> str | None:
    if isinstance(value, bytes):
        return None
    text = os.fspath(value)
    return text if len(text) < 2048 and not text.startswith("data:") else None


class AsyncClient:
    """Submit and follow jobs from async code. Pass ``redis``/``celery`` to share connections."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_url: str | None = None,
        celery: Celery | None = None,
        trusted: bool = True,
    ) -> None:
        self.settings = settings or Settings()
        # A server taking images from untrusted callers must never read its own files or
        # buckets: with trusted=False, local paths and s3:// sources are refused.
        self._trusted = trusted
        self._redis_url = redis_url or self.settings.redis_url
        self._celery = celery
        self._owns_celery = celery is None
        self._redis: aioredis.Redis | None = None
        self._stores: tuple[ImageStore, ResultStore, JobEvents] | None = None

    def _connect(self) -> tuple[ImageStore, ResultStore, JobEvents]:
        if self._stores is None:
            url = resolve_redis_url(self._redis_url)
            self._redis_url = url
            self._redis = aioredis.from_url(url)
            self._stores = build_stores(self.settings, self._redis)
            if self._celery is None:
                self._celery = create_celery(self.settings, self.settings.broker_url or url)
        return self._stores

    async def aclose(self) -> None:
        if self._celery is not None and self._owns_celery:
            self._celery.close()
            self._celery = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._stores = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- submit ------------------------------------------------------------------------------
    async def submit(
        self, images: Sequence[ImageLike | ImageInput], prompt: str, **options: Any
    ) -> str:
        """Enqueue one job; returns its id. Bad input gives a failed job, never an exception."""
        return (await self.submit_many([SubmitRequest(images=images, prompt=prompt, **options)]))[0]

    async def submit_many(self, requests: Iterable[SubmitRequest]) -> list[str]:
        """Enqueue jobs; returns their ids in order. Bad input gives failed jobs, not exceptions.

        Raises StorageUnavailableError when Redis/S3 or the broker cannot be reached; the jobs
        it could not enqueue are then forgotten, so the same ids can be submitted again.
        """
        images, results, events = self._connect()
        ids: list[str] = []
        to_send: list[Job] = []
        try:
            for req in requests:
                job_id = req.job_id or new_job_id()
                ids.append(job_id)
                job = await self._admit(req, job_id, images, results, events)
                if job is not None:
                    to_send.append(job)
        finally:
            # Even when a later item raised, the jobs already recorded as queued are sent.
            if to_send:
                await self._send_or_forget(to_send, results)
        return ids

    async def _admit(
        self,
        req: SubmitRequest,
        job_id: str,
        images: ImageStore,
        results: ResultStore,
        events: JobEvents,
    ) -> Job | None:
        """The job to enqueue, or None (rejected as a failed job, or a known id)."""
        try:
            job = await self._build_job(req, job_id, images)
        except errors.RetryableError:
            raise  # storage down: nothing recorded, the caller may try again
        except errors.ImgqError as exc:
            await self._record_rejected(req, job_id, exc, results, events)
            return None
        except Exception as exc:  # input the parsers did not anticipate (e.g. a number)
            bad = errors.InvalidJobError(f"invalid job input ({type(exc).__name__}: {exc})")
            await self._record_rejected(req, job_id, bad, results, events)
            return None
        queued = Result(
            job_id=job_id,
            model=job.model,
            metadata=job.metadata,
            sources=[s.source for s in job.images],
        )
        queued.timings.queued_at = job.submitted_at
        if await results.create(queued) is not None:  # a known job id is never run twice
            return None
        return job

    async def _send_or_forget(self, jobs: list[Job], results: ResultStore) -> None:
        try:
            await asyncio.to_thread(self._send, jobs)
        except Exception as exc:
            for job in jobs:
                await results.delete(job.job_id)
            raise errors.StorageUnavailableError(f"could not reach the broker: {exc}") from exc

    async def _build_job(self, req: SubmitRequest, job_id: str, store: ImageStore) -> Job:
        s = self.settings
        check_prompt(req.prompt)
        if not req.images:
            raise errors.InvalidJobError("a job needs at least one image")
        if len(req.images) > s.max_images_per_job:
            raise errors.InvalidJobError(
                f"{len(req.images)} images in one job; the API accepts at most {s.max_images_per_job}"
            )
        specs: list[ImageSpec] = []
        for item in req.images:
            inp = item if isinstance(item, ImageInput) else ImageInput(item)
            detail = inp.detail or req.detail
            src = parse_source(inp.source, max_bytes=s.max_image_bytes, allow_paths=self._trusted)
            if isinstance(src, UrlSource):
                ref = src.url
            elif isinstance(src, S3Source):
                if not self._trusted:
                    raise errors.ImageUrlForbiddenError(
                        "s3:// images are not accepted here: upload the image or give an https URL"
                    )
                ref = f"s3://{src.bucket}/{src.key}"
            else:
                assert isinstance(src, BytesSource)
                ref = await store.put(src.data)
            specs.append(ImageSpec(ref=ref, detail=detail, source=_describe(inp.source)))
        try:
            return Job(
                job_id=job_id,
                images=specs,
                prompt=req.prompt,
                model=req.model or s.default_model,
                api=req.api,
                max_output_tokens=req.max_output_tokens or s.default_max_output_tokens,
                json_schema=req.json_schema,
                metadata=req.metadata,
                priority=req.priority,
                max_image_tokens=req.max_image_tokens,
                dedup=req.dedup,
            )
        except ValueError as exc:
            raise errors.InvalidJobError(f"invalid job: {exc}") from exc

    async def _record_rejected(
        self,
        req: SubmitRequest,
        job_id: str,
        exc: errors.ImgqError,
        results: ResultStore,
        events: JobEvents,
    ) -> None:
        now = time.time()
        failed = Result(
            job_id=job_id, status="failed", model=req.model or self.settings.default_model
        )
        failed.metadata = req.metadata
        failed.error = ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable)
        failed.timings.queued_at = failed.timings.finished_at = now
        if await results.create(failed) is None:
            await events.publish(job_id, "failed")

    def _send(self, jobs: list[Job]) -> None:
        app = self._celery
        assert app is not None
        with app.producer_or_acquire() as producer:
            for job in jobs:
                app.send_task(
                    TASK_NAME,
                    args=[job.model_dump(mode="json")],
                    queue=job.priority,
                    producer=producer,
                )

    # -- read --------------------------------------------------------------------------------
    async def get(self, job_id: str) -> Result | None:
        return await self._connect()[1].get(job_id)

    async def wait(self, job_id: str, timeout: float | None = None) -> Result:
        async for r in self.as_completed([job_id], timeout=timeout):
            return r
        raise TimeoutError(job_id)  # pragma: no cover

    def as_completed(
        self, job_ids: Iterable[str], timeout: float | None = None
    ) -> AsyncIterator[Result]:
        """Terminal results in the order they finish; TimeoutError after ``timeout`` seconds."""
        _, results, events = self._connect()
        return iter_results(results, events, job_ids, timeout=timeout)


class Client:
    """The synchronous client: the async one driven on a private event-loop thread."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._loop = LoopThread("imgq-client-loop")
        self._async = AsyncClient(settings, **kwargs)

    def submit(self, images: Sequence[ImageLike | ImageInput], prompt: str, **options: Any) -> str:
        return self._loop.run(self._async.submit(images, prompt, **options))

    def submit_many(self, requests: Iterable[SubmitRequest]) -> list[str]:
        return self._loop.run(self._async.submit_many(list(requests)))

    def get(self, job_id: str) -> Result | None:
        return self._loop.run(self._async.get(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Result:
        return self._loop.run(self._async.wait(job_id, timeout))

    def as_completed(
        self, job_ids: Iterable[str], timeout: float | None = None
    ) -> Iterator[Result]:
        agen = self._async.as_completed(list(job_ids), timeout)

        async def next_result() -> Result:
            return await agen.__anext__()

        try:
            while True:
                try:
                    yield self._loop.run(next_result())
                except StopAsyncIteration:
                    return
        finally:
            self._loop.run(agen.aclose())  # type: ignore[attr-defined]

    def close(self) -> None:
        self._loop.run(self._async.aclose())
        self._loop.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["AsyncClient", "Client", "ImageInput", "SubmitRequest"]
