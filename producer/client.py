"""The Python client: submit image jobs, read and wait for their results. Async and sync.

>>> from imgq import Client
>>> with Client(redis_url="redis://127.0.0.1:6379/0") as c:  # doctest: +SKIP
...     job_id = c.submit(["photo.jpg"], "What is in this image?")
...     print(c.wait(job_id, timeout=60).output_text)

Without a Redis URL (argument or ``IMGQ_REDIS_URL``) the client says what to set; it never
starts a server by itself:

>>> Client(Settings(redis_url=None))
Traceback (most recent call last):
...
shared.errors.ConfigurationError: no Redis configured: set IMGQ_REDIS_URL (e.g. redis://127.0.0.1:6379/0) or pass redis_url=...; only the `imgq` command line starts an embedded Redis by itself
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from celery import Celery

from producer.generation_jobs import build_generation_job, output_images, save_images, split_options
from shared import errors
from shared.admission import (
    MAX_MODEL_NAME_CHARS,
    AdmissionLimits,
    UploadBudget,
    admit_request,
    check_metadata,
)
from shared.broker import TASK_NAME, create_celery
from shared.catalogue import catalogue_for
from shared.generation import GenerationOptions, Kind
from shared.images import BytesSource, S3Source, UrlSource, parse_source
from shared.jobs import Api, ErrorInfo, ImageSpec, Job, Priority, Result, Route, new_job_id
from shared.jobstate import record_submitted, state_key
from shared.loop_thread import LoopThread
from shared.redact import redact_source
from shared.settings import Settings
from shared.storage import ImageStore, JobEvents, ResultStore, build_stores, iter_results
from shared.tenant_ids import check_job_id, unscope
from shared.vision_tokens import Detail

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
    route: Route = "online"  # batch: OpenAI's Batch API, half price, answered within 24 h
    job_id: str | None = None
    max_image_tokens: int | None = None
    dedup: bool = True
    deadline_seconds: float | None = None  # expires_at = submit + this (default: settings)
    # Image generation (issue 15): kind generate/edit, the Images API options, an edit's mask.
    kind: Kind = "analyze"
    generation: GenerationOptions | None = None
    mask: ImageLike | None = None
    responses_model: str | None = None  # generate via the Responses image_generation tool
    tenant: str | None = None  # issue 11: set by the HTTP API from the caller's key
    callback_url: str | None = None  # issue 11: POST the final document here (signed)
    stream: bool = False  # issue 11: publish the output text as it streams (vision jobs only)


def check_request_id(req: SubmitRequest) -> None:
    """InvalidJobError unless ``req.job_id`` is None or an id the HTTP API accepts.

    An id is a Redis key and, through the API, a tenant's name for its job: one with control
    characters, 200+ characters or ``~`` (the tenant separator: ``acme~x`` would be tenant
    acme's job ``x``) is refused. With ``tenant`` set (the API), it is that tenant's scoped id.
    """
    job_id = req.job_id
    if job_id is None:
        return
    own = unscope(req.tenant, job_id) if isinstance(job_id, str) else None
    if own is None or not check_job_id(own):
        raise errors.InvalidJobError(
            "`job_id` is 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-' "
            f"(got {str(job_id)[:60]!r}{'...' if len(str(job_id)) > 60 else ''})"
        )


def _describe(value: ImageLike) -> str | None:
    if isinstance(value, bytes):
        return None
    text = os.fspath(value)
    # Echoed in results: never a URL's credentials or (presigned) query string (issue 11).
    return redact_source(text) if len(text) < 2048 and not text.startswith("data:") else None


class AsyncClient:
    """Submit and follow jobs from async code. Pass ``redis``/``celery`` to share connections."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_url: str | None = None,
        celery: Celery | None = None,
        trusted: bool = True,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if redis_url:
            self.settings = self.settings.model_copy(update={"redis_url": redis_url})
        self._redis_url = self.settings.require_redis_url()  # no hidden servers: fail fast
        # A server taking images from untrusted callers must never read its own files or
        # buckets: with trusted=False, local paths and s3:// sources are refused.
        self._trusted = trusted
        self._celery = celery
        self._owns_celery = celery is None
        self._redis: aioredis.Redis | None = redis  # given: shared (e.g. the API's fixed pool)
        self._owns_redis = redis is None
        self._stores: tuple[ImageStore, ResultStore, JobEvents] | None = None

    def _connect(self) -> tuple[ImageStore, ResultStore, JobEvents]:
        if self._stores is None:
            if self._redis is None:
                self._redis = aioredis.from_url(self._redis_url)
            self._stores = build_stores(self.settings, self._redis)
            if self._celery is None:
                broker_url = self.settings.effective_broker_url or self._redis_url
                self._celery = create_celery(self.settings, broker_url)
        return self._stores

    async def aclose(self) -> None:
        if self._celery is not None and self._owns_celery:
            self._celery.close()
            self._celery = None
        if self._redis is not None and self._owns_redis:
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
        """Enqueue one job; returns its id. Bad input gives a failed job; a bad ``job_id``
        (which could not name that record) raises InvalidJobError."""
        return (await self.submit_many([SubmitRequest(images=images, prompt=prompt, **options)]))[0]

    async def submit_many(self, requests: Iterable[SubmitRequest]) -> list[str]:
        """Enqueue jobs; returns their ids in order. Bad input gives failed jobs, not exceptions.

        Raises StorageUnavailableError when Redis/S3 or the broker cannot be reached; the jobs
        it could not enqueue are then forgotten, so the same ids can be submitted again.
        Raises InvalidJobError for a ``job_id`` the API would not accept, before any job of
        the call is stored (``check_request_id``).
        """
        requests = list(requests)
        for req in requests:
            check_request_id(req)
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
        # Deadline (issue 9): never past the image TTL, so a job's images outlive the job.
        life = min(req.deadline_seconds or self.settings.job_deadline_seconds,
                   self.settings.image_ttl_seconds)  # fmt: skip
        job.expires_at = job.submitted_at + life
        if await results.create(queued) is not None:  # a known job id is never run twice
            return None
        assert self._redis is not None  # the spec, for the reconciler and `imgq dlq retry`
        try:
            await record_submitted(self._redis, job, expires_at=job.expires_at,
                                   ttl_seconds=self.settings.result_ttl_seconds)  # fmt: skip
        except Exception as exc:  # never a queued record that nothing can run: free the id
            await results.delete(job_id)
            raise errors.StorageUnavailableError(f"could not record the job: {exc}") from exc
        return job

    async def _send_or_forget(self, jobs: list[Job], results: ResultStore) -> None:
        sent: list[str] = []
        try:
            await asyncio.to_thread(self._send, jobs, sent)
        except Exception as exc:
            # Jobs already published stay recorded (they will run); only the others are freed.
            for job in jobs[len(sent) :]:
                await results.delete(job.job_id)
                if self._redis is not None:
                    await self._redis.delete(state_key(job.job_id))
            raise errors.StorageUnavailableError(f"could not reach the broker: {exc}") from exc

    async def _build_job(self, req: SubmitRequest, job_id: str, store: ImageStore) -> Job:
        """Every check before paying (shared/admission.py), then the uploads are stored.

        Nothing is stored until all checks passed: a rejected job leaves no image behind.
        """
        s = self.settings
        limits = AdmissionLimits.from_settings(s)
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
                trusted=self._trusted,
                responses_model=req.responses_model,
                tenant=req.tenant,  # issue 11: the budget is settled by tenant jobs only
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
            src = parse_source(inp.source, max_bytes=s.max_image_bytes, allow_paths=self._trusted)
            spec = ImageSpec(ref="", detail=detail, source=_describe(inp.source))
            if isinstance(src, UrlSource):
                spec.ref = src.url
            elif isinstance(src, S3Source):
                if not self._trusted:
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

    async def _record_rejected(
        self,
        req: SubmitRequest,
        job_id: str,
        exc: errors.ImgqError,
        results: ResultStore,
        events: JobEvents,
    ) -> None:
        """A small failed record: the caller's metadata only if it is within the caps."""
        now = time.time()
        model: str | None = req.model or self.settings.default_model
        if not isinstance(model, str) or len(model) > MAX_MODEL_NAME_CHARS:
            model = None  # a hostile 100,000-character name is not kept
        failed = Result(job_id=job_id, status="failed", model=model)
        try:
            check_metadata(req.metadata, AdmissionLimits.from_settings(self.settings))
            failed.metadata = req.metadata
        except errors.ImgqError:
            pass  # oversized, too deep or not JSON: the error says so, the record stays small
        failed.error = ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable)
        failed.timings.queued_at = failed.timings.finished_at = now
        if await results.create(failed) is None:
            await events.publish(job_id, "failed")

    def _send(self, jobs: list[Job], sent: list[str] | None = None) -> None:
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
                if sent is not None:
                    sent.append(job.job_id)

    # -- image generation (issue 15) ------------------------------------------------------------
    async def generate(self, prompt: str, **options: Any) -> str:
        """Enqueue an image generation job: Images API options (model, n, size, quality, ...)
        and job fields (metadata, priority, job_id) as keywords. Returns the job id.

        ``responses_model="gpt-4.1-mini"`` generates through the Responses API's
        image_generation tool on that model instead of the Images API (one image per job)."""
        opts, rest = split_options(options)
        model = rest.get("responses_model") or opts.model
        req = SubmitRequest(
            images=[], prompt=prompt, kind="generate", generation=opts, model=model, **rest
        )
        return (await self.submit_many([req]))[0]

    async def edit(
        self,
        images: Sequence[ImageLike],
        prompt: str,
        *,
        mask: ImageLike | None = None,
        **options: Any,
    ) -> str:
        """Enqueue an image edit job (files or bytes; ``mask``: PNG with alpha, same size)."""
        opts, rest = split_options(options)
        req = SubmitRequest(images=list(images), prompt=prompt, kind="edit", generation=opts,
                            model=opts.model, mask=mask, **rest)  # fmt: skip
        return (await self.submit_many([req]))[0]

    async def read_image(self, ref: str) -> bytes:
        """The bytes of a stored image (e.g. ``result.images[i].ref``)."""
        return await self._connect()[0].get(ref)

    async def save_images(self, job_id: str, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write a finished generate/edit job's images into ``out_dir``; returns the paths."""
        images, results, _ = self._connect()
        result = await results.get(job_id)
        if result is None:
            raise errors.InvalidJobError(f"no job {job_id}")
        return save_images(await output_images(images, result), job_id, Path(out_dir))

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
        self._async = AsyncClient(settings, **kwargs)  # first: it may refuse the settings
        self._loop = LoopThread("imgq-client-loop")

    def submit(self, images: Sequence[ImageLike | ImageInput], prompt: str, **options: Any) -> str:
        return self._loop.run(self._async.submit(images, prompt, **options))

    def submit_many(self, requests: Iterable[SubmitRequest]) -> list[str]:
        return self._loop.run(self._async.submit_many(list(requests)))

    def generate(self, prompt: str, **options: Any) -> str:
        return self._loop.run(self._async.generate(prompt, **options))

    def edit(
        self,
        images: Sequence[ImageLike],
        prompt: str,
        *,
        mask: ImageLike | None = None,
        **options: Any,
    ) -> str:
        return self._loop.run(self._async.edit(images, prompt, mask=mask, **options))

    def save_images(self, job_id: str, out_dir: str | os.PathLike[str]) -> list[Path]:
        return self._loop.run(self._async.save_images(job_id, out_dir))

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
