"""Tiny images are prepared on the worker loop; anything larger or costly to decode on the pool.

A thread hop costs more than preparing a thumbnail (issue 12: measured in BENCHMARKS.md), so
only images under both inline bounds skip the pool; the bounds keep the loop's pause small
whatever a caller sends (a tiny file that declares a huge canvas is priced from its header and
decoded on the pool, or refused).
"""

from __future__ import annotations

import dataclasses
import io
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image
from pydantic import SecretStr

from producer.client import AsyncClient
from shared.errors import ImageTooLargeError, ImgqError
from shared.jobstate import load_spec
from shared.settings import Settings
from tests.conftest import Sim
from tests.pipeline.conftest import make_image
from workers.images_step import INLINE_DECODE_BYTES, INLINE_IMAGE_BYTES, prepare_job_images
from workers.runtime import WorkerRuntime


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _noise_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buf, "PNG")
    return buf.getvalue()


def _huge_canvas_png() -> bytes:
    """A few hundred bytes that declare a 8000x8000 canvas: pricing it needs no decoding."""
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, "PNG")
    return buf.getvalue()


def _prepare(
    redis_url: str, sim: Sim, image: bytes, **settings: Any
) -> tuple[int, ImgqError | None]:
    """Submit ``image`` in a job and prepare it as a worker does: the executor hops it took,
    and the job's error if preparing failed."""
    s = Settings(
        redis_url=redis_url, openai_base_url=sim.base_url, openai_api_key=SecretStr("sk-t"),
        **settings,
    )  # fmt: skip
    runtime = WorkerRuntime(s, redis_url=redis_url)
    executor = CountingExecutor()
    try:
        deps = dataclasses.replace(runtime.deps(), executor=executor)

        async def prepare() -> None:
            async with AsyncClient(s) as c:
                job_id = await c.submit([image], "Describe.", dedup=False)
            job = await load_spec(deps.redis, job_id)
            assert job is not None
            prepared = await prepare_job_images(job, deps)
            assert len(prepared) == 1 and prepared[0].tokens > 0

        try:
            runtime.run(prepare(), timeout=60)
        except ImgqError as exc:
            return executor.submitted, exc
        return executor.submitted, None
    finally:
        runtime.shutdown()
        executor.shutdown()


@pytest.mark.parametrize(
    ("image", "pool_calls"),
    [
        pytest.param(make_image(3), 0, id="thumbnail-on-the-loop"),
        pytest.param(_noise_png((512, 512)), 2, id="large-file-on-the-pool"),
    ],
)
def test_where_images_are_prepared(
    redis_url: str, simulator: Sim, image: bytes, pool_calls: int
) -> None:
    assert (len(image) <= INLINE_IMAGE_BYTES) == (pool_calls == 0)
    assert _prepare(redis_url, simulator, image) == (pool_calls, None)


def test_a_tiny_file_with_a_huge_canvas_is_refused_before_any_decode(
    redis_url: str, simulator: Sim
) -> None:
    data = _huge_canvas_png()
    assert len(data) <= INLINE_IMAGE_BYTES and INLINE_DECODE_BYTES < 8000 * 8000
    hops, error = _prepare(redis_url, simulator, data, decode_budget_bytes=64 * 2**20)
    assert isinstance(error, ImageTooLargeError)
    assert hops == 0  # priced from its header on the loop; never decoded
