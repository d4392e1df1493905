"""``Client``: the synchronous client, ``AsyncClient`` driven on a private event-loop thread."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from producer.async_client import AsyncClient
from producer.submit_request import ImageInput, ImageLike, SubmitRequest
from shared.jobs import Result
from shared.loop_thread import LoopThread
from shared.settings import Settings


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
        return self._loop.iterate(self._async.as_completed(list(job_ids), timeout))

    def close(self) -> None:
        self._loop.run(self._async.aclose())
        self._loop.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["Client"]
