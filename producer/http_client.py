"""The Python client over the HTTP API (a base URL and an API key), async and sync.

The same calls as ``imgq.Client`` (submit, submit_many, get, wait) plus cancel and list, for
services that reach imgq only through its API. Local files are read here and sent as data
URLs; URLs are passed on for the workers to fetch.

>>> from imgq import HttpClient
>>> with HttpClient("https://imgq.internal", api_key="imgq_...") as c:  # doctest: +SKIP
...     job_id = c.submit(["photo.jpg"], "What is in this image?", priority="bulk")
...     print(c.wait(job_id, timeout=60).output_text)

Errors from the API raise ``ApiError`` with its stable ``code``, HTTP status and request id.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from shared.errors import ImgqError
from shared.images.formats import MIME, sniff
from shared.jobs import Result
from shared.loop_thread import LoopThread

ImageLike = str | bytes | os.PathLike[str]


class ApiError(ImgqError):
    """An error answer of the HTTP API: ``code``, ``status``, ``request_id``."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.request_id = request_id


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
            doc = await resp.json(content_type=None)
            if resp.status >= 400:
                err = (doc or {}).get("error") or {}
                raise ApiError(resp.status, str(err.get("code", "http_error")),
                               str(err.get("message", resp.reason)),
                               resp.headers.get("X-Request-Id"))  # fmt: skip
            return doc

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

    def close(self) -> None:
        self._loop.run(self._async.aclose())
        self._loop.stop()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["ApiError", "AsyncHttpClient", "HttpClient", "job_body"]
