"""Sending webhooks from the worker: a finished job's document to its ``callback_url``.

``schedule`` is the processor's hook once a job's result is final: it queues one durable
delivery (shared/webhooks.py). ``WebhookSender`` runs on each worker's loop: it claims due
deliveries, signs them (with every valid secret of the tenant while a rotation's grace period
runs) and POSTs them through the fetch session (the SSRF guard of image URLs:
every resolved address is checked at connect time, no redirects followed), and retries
non-2xx answers and network errors with backoff until the attempts or the lifetime run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from redis.exceptions import RedisError
from yarl import URL

from shared.errors import ImageFetchError, ImageUrlForbiddenError
from shared.images.fetch import AllowList, ForbiddenAddressError, check_host
from shared.jobs import Job, Result
from shared.tenant_ids import public_doc
from shared.webhooks import SIGNATURE_HEADER, Delivery, WebhookQueue, sign, tenant_secrets
from workers.deps import WorkerDeps

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
MAX_SENDING = 16  # deliveries in flight per worker process


async def schedule(deps: WorkerDeps, job: Job, result: Result) -> None:
    """Queue ``job``'s webhook once its result is final (never raises: logged instead)."""
    if not job.callback_url or not result.done:
        return
    payload = {"type": "job.finished", "job": public_doc(result, job.tenant)}
    try:
        await WebhookQueue(deps.redis).enqueue(
            job.callback_url, job.tenant, payload, lifetime=deps.settings.webhook_lifetime_seconds
        )
    except (RedisError, OSError) as exc:
        log.warning("job %s: webhook not queued: %r", job.job_id, exc)


class WebhookSender:
    """The delivery loop of one worker process (started on its loop, closed with it)."""

    def __init__(self, deps: WorkerDeps) -> None:
        self._deps = deps
        self._queue = WebhookQueue(deps.redis)
        self._allow = AllowList(deps.settings.fetch_allow_hosts)
        self._slots = asyncio.Semaphore(MAX_SENDING)
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def start(self) -> WebhookSender:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="imgq-webhooks")
        return self

    async def aclose(self) -> None:
        for task in [self._task, *self._sending]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _run(self) -> None:
        while True:
            claimed: list[Delivery] = []
            try:
                claimed = await self._queue.claim(limit=MAX_SENDING)
            except (RedisError, OSError, ValueError) as exc:
                log.warning("webhooks: cannot claim deliveries: %r", exc)
            for d in claimed:
                await self._slots.acquire()
                task = asyncio.get_running_loop().create_task(self._send(d))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            if not claimed:
                await asyncio.sleep(POLL_SECONDS)

    async def _send(self, d: Delivery) -> None:
        s = self._deps.settings
        try:
            ok = await self._post(d)
            if ok:
                await self._queue.done(d)
            elif not await self._queue.retry_later(d, max_attempts=s.webhook_max_attempts):
                log.warning("webhook %s to %s: given up after %d attempts",
                            d.id, URL(d.url).host, d.attempts)  # fmt: skip
        except (ImageUrlForbiddenError, ForbiddenAddressError) as exc:
            log.warning("webhook %s: refused by the SSRF guard: %s", d.id, exc)
            with contextlib.suppress(RedisError, OSError):
                await self._queue.done(d)
        except (RedisError, OSError) as exc:
            log.warning("webhook %s: storage error, retried after its lease: %r", d.id, exc)
        finally:
            self._slots.release()

    async def _post(self, d: Delivery) -> bool:
        url = URL(d.url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ImageUrlForbiddenError(f"not an http(s) URL: {url.scheme}")
        # Read per delivery: a rotation (or the end of its grace period) applies to the next one.
        current, *previous = await tenant_secrets(self._deps.redis, d.tenant)
        body = d.body.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(current, body, previous=previous),
            "Imgq-Delivery": d.id,
            "Imgq-Attempt": str(d.attempts + 1),
        }
        timeout = aiohttp.ClientTimeout(total=self._deps.settings.webhook_timeout_seconds)
        try:
            await check_host(url.host, url.port or 443, self._allow)
            if self._deps.http is None:
                raise ImageFetchError("the worker has no HTTP session")
            async with self._deps.http.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=timeout
            ) as resp:
                return 200 <= resp.status < 300
        except (ForbiddenAddressError, ImageUrlForbiddenError):
            raise
        except (aiohttp.ClientError, TimeoutError, ImageFetchError, OSError):
            return False


def start_webhooks(deps: WorkerDeps) -> WebhookSender:
    """Start the sender on the running loop; ``aclose()`` it when the worker stops."""
    return WebhookSender(deps).start()


__all__ = ["WebhookSender", "schedule", "start_webhooks"]
