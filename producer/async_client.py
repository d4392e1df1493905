"""``AsyncClient``: submit image jobs and follow their results from async code.

Submitting: each ``SubmitRequest`` is checked and its images stored (``producer.job_intake``),
recorded as queued, then all of the call's jobs are sent to the broker in one go. Reading:
results from the result store, waits on the job events channel.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from celery import Celery

from producer.generation_jobs import output_images, save_images, split_options
from producer.job_intake import build_job, record_rejected
from producer.submit_request import ImageInput, ImageLike, SubmitRequest, check_request_id
from shared import errors
from shared.broker import TASK_NAME, create_celery
from shared.jobs import Job, Result, new_job_id
from shared.jobstate import record_submitted, state_key
from shared.settings import Settings
from shared.storage import ImageStore, JobEvents, ResultStore, build_stores, iter_results


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
            job = await build_job(
                req, job_id, images, settings=self.settings, trusted=self._trusted
            )
        except errors.RetryableError:
            raise  # storage down: nothing recorded, the caller may try again
        except errors.ImgqError as exc:
            await record_rejected(
                req, job_id, exc, settings=self.settings, results=results, events=events
            )
            return None
        except Exception as exc:  # input the parsers did not anticipate (e.g. a number)
            bad = errors.InvalidJobError(f"invalid job input ({type(exc).__name__}: {exc})")
            await record_rejected(
                req, job_id, bad, settings=self.settings, results=results, events=events
            )
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
        and job fields (metadata, priority, job_id, callback_url) as keywords. Returns the job id.

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


__all__ = ["AsyncClient"]
