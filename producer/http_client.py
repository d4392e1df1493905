"""The Python client over the HTTP API (a base URL and an API key), async and sync.

The same calls as ``imgq.Client`` (submit, submit_many, get, wait) plus cancel and list, for
services that reach imgq only through its API. Local files are read here and sent as data
URLs; URLs are passed on for the workers to fetch.

>>> from imgq import HttpClient
>>> with HttpClient("https://imgq.internal", api_key="imgq_...") as c:  # doctest: +SKIP
...     job_id = c.submit(["photo.jpg"], "What is in this image?", priority="bulk")
...     print(c.wait(job_id, timeout=60).output_text)

``events`` follows one job as it runs: a ``StatusEvent`` (the job as a ``Result``) at each status
change, and for a job submitted with ``stream=True`` the text as it comes (``DeltaEvent``):

>>> from imgq import DeltaEvent, HttpClient
>>> with HttpClient("https://imgq.internal", api_key="imgq_...") as c:  # doctest: +SKIP
...     job_id = c.submit(["photo.jpg"], "What is in this image?", stream=True)
...     for event in c.events(job_id):  # ends after the final status
...         if isinstance(event, DeltaEvent):
...             print(event.text, end="", flush=True)
...         elif event.job.done:
...             print(f"\n[{event.job.status}]")

Errors from the API raise ``ApiError`` with its stable ``code``, HTTP status and request id.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from producer.http_events import (
    DeltaEvent,
    EventOrder,
    EventStreamError,
    JobEvent,
    SseParser,
    StatusEvent,
)
from producer.submit_request import ImageLike
from shared.errors import ImgqError
from shared.images.formats import MIME, sniff
from shared.jobs import Result
from shared.loop_thread import LoopThread

# The API sends a keep-alive every 15 s on an event stream: a read silent this long is a dead one.
EVENTS_READ_SECONDS = 45.0
RECONNECT_PAUSE = 1.0  # the least time between two connections of one event stream


class ApiError(ImgqError):
    """An error answer of the HTTP API: ``code``, ``status``, ``request_id``."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.request_id = request_id


async def _api_error(resp: aiohttp.ClientResponse) -> ApiError:
    """The error an answer >= 400 carries (a body that is not the API's: its HTTP reason)."""
    try:
        doc = await resp.json(content_type=None)
    except ValueError:  # e.g. a proxy's HTML page
        doc = None
    err = (doc.get("error") if isinstance(doc, dict) else None) or {}
    return ApiError(resp.status, str(err.get("code", "http_error")),
                    str(err.get("message", resp.reason)), resp.headers.get("X-Request-Id"))  # fmt: skip


def _parse(parser: SseParser, chunk: bytes, resp: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    try:
        return parser.feed(chunk)
    except EventStreamError as exc:
        raise ApiError(
            resp.status, "bad_event_stream", f"the event stream: {exc}",
            resp.headers.get("X-Request-Id"),
        ) from exc  # fmt: skip


def _image(value: ImageLike) -> str:
    if isinstance(value, str) and value.startswith(("http://", "https://", "data:")):
        return value
    data = value if isinstance(value, bytes) else Path(value).read_bytes()
    encoded = base64.b64encode(data).decode()
    mime = MIME.get(sniff(data) or "")
    return f"data:{mime};base64,{encoded}" if mime else encoded  # the API sniffs it anyway


def job_body(images: Sequence[ImageLike], prompt: str, **options: Any) -> dict[str, Any]:
    """The JSON of one job for ``POST /v1/jobs`` (options: model, priority, job_id, ...)."""
    return {"images": [_image(i) for i in images], "prompt": prompt, **options}


class AsyncHttpClient:
    """Submit and follow jobs through the HTTP API from async code."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout: float = 60.0) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the loop that uses it
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def _call(
        self, method: str, path: str, *, timeout: float | None = None, **kw: Any
    ) -> Any:
        budget = aiohttp.ClientTimeout(total=timeout or self._timeout)
        async with self._http().request(method, self._base + path, timeout=budget, **kw) as resp:
            if resp.status >= 400:
                raise await _api_error(resp)
            return await resp.json(content_type=None)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def submit(self, images: Sequence[ImageLike], prompt: str, **options: Any) -> str:
        """Enqueue one job; its id. Refused input gives a failed job, as with ``Client``."""
        doc = await self._call("POST", "/v1/jobs", json=job_body(images, prompt, **options))
        return str(doc["job_id"])

    async def submit_many(self, jobs: Iterable[dict[str, Any]]) -> list[Result | ApiError]:
        """``POST /v1/jobs/batch`` with bodies from ``job_body``: one answer per job, in order."""
        doc = await self._call("POST", "/v1/jobs/batch", json={"jobs": list(jobs)})
        out: list[Result | ApiError] = []
        for item in doc["jobs"]:
            if "job" in item:
                out.append(Result.model_validate(item["job"]))
            else:
                err = item["error"]
                out.append(ApiError(item["status"], err["code"], err["message"], None))
        return out

    async def get(self, job_id: str) -> Result | None:
        try:
            return Result.model_validate(await self._call("GET", f"/v1/jobs/{job_id}"))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def wait(self, job_id: str, timeout: float | None = None) -> Result:
        """The finished result; TimeoutError after ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 60.0 if deadline is None else max(0.0, deadline - time.monotonic())
            step = min(60.0, left)
            doc = await self._call("GET", f"/v1/jobs/{job_id}", params={"wait": f"{step:.3f}"},
                                   timeout=step + self._timeout)  # fmt: skip
            result = Result.model_validate(doc)
            if result.done:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(job_id)

    async def cancel(self, job_id: str) -> Result:
        return Result.model_validate(await self._call("DELETE", f"/v1/jobs/{job_id}"))

    async def list(
        self, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Result], str | None]:
        params = {"limit": str(limit), **({"status": status} if status else {}),
                  **({"cursor": cursor} if cursor else {})}  # fmt: skip
        doc = await self._call("GET", "/v1/jobs", params=params)
        return [Result.model_validate(d) for d in doc["jobs"]], doc["next_cursor"]

    async def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's events until its final status: ``StatusEvent`` at each status change,
        ``DeltaEvent`` with the text of a ``stream`` job as it comes (from when this connects).

        The API ends a stream after some minutes (MAX_STREAM_SECONDS); it is reconnected here.
        ``ApiError`` for an unknown job (404: another tenant's too) or a refused key (401).
        """
        order = EventOrder()
        budget = aiohttp.ClientTimeout(
            total=None, connect=self._timeout, sock_read=max(self._timeout, EVENTS_READ_SECONDS)
        )
        url = f"{self._base}/v1/jobs/{job_id}/events"
        while True:
            opened = time.monotonic()
            parser = SseParser()
            async with self._http().get(
                url, timeout=budget, headers={"Accept": "text/event-stream"}
            ) as resp:
                if resp.status >= 400:
                    raise await _api_error(resp)
                async for chunk in resp.content.iter_any():
                    for name, data in _parse(parser, chunk, resp):
                        for event in order.accept(name, data):
                            yield event
                    if order.done:
                        return
                _parse(parser, b"", resp)  # an error held back from the last chunk
            # Ended before the final status: the API's time limit. A job deleted meanwhile
            # answers 404 on the next connection; a server ending streams at once is not
            # hammered.
            await asyncio.sleep(max(0.0, opened + RECONNECT_PAUSE - time.monotonic()))


class HttpClient:
    """The synchronous HTTP client: the async one on a private event-loop thread."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout: float = 60.0) -> None:
        self._async = AsyncHttpClient(base_url, api_key=api_key, timeout=timeout)
        self._loop = LoopThread("imgq-http-client")

    def submit(self, images: Sequence[ImageLike], prompt: str, **options: Any) -> str:
        return self._loop.run(self._async.submit(images, prompt, **options))

    def submit_many(self, jobs: Iterable[dict[str, Any]]) -> list[Result | ApiError]:
        return self._loop.run(self._async.submit_many(list(jobs)))

    def get(self, job_id: str) -> Result | None:
        return self._loop.run(self._async.get(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Result:
        return self._loop.run(self._async.wait(job_id, timeout))

    def cancel(self, job_id: str) -> Result:
        return self._loop.run(self._async.cancel(job_id))

    def list(
        self, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Result], str | None]:
        return self._loop.run(self._async.list(status=status, limit=limit, cursor=cursor))

    def events(self, job_id: str) -> Iterator[JobEvent]:
        """``AsyncHttpClient.events`` as a plain iterator (each step on this client's loop)."""
        return self._loop.iterate(self._async.events(job_id))

    def close(self) -> None:
        self._loop.run(self._async.aclose())
        self._loop.stop()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = [
    "ApiError",
    "AsyncHttpClient",
    "DeltaEvent",
    "HttpClient",
    "JobEvent",
    "StatusEvent",
    "job_body",
]
