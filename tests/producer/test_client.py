"""The Python client, sync and async, against the package's stack (Redis, worker, simulator)."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest
import redis

from producer.client import AsyncClient, Client, ImageInput, SubmitRequest
from shared.embedded_redis import free_port
from shared.errors import StorageUnavailableError
from shared.jobs import Result
from shared.settings import Settings
from tests.pipeline.conftest import make_image, sent_hash
from tests.producer.conftest import Stack

IMAGE_LINE = re.compile(r"IMAGE sha256=([0-9a-f]{16})")
PROMPT = "Describe this image."


@pytest.mark.slow
def test_sync_client_submit_wait_as_completed(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    path.write_bytes(make_image(401))
    raw = make_image(402)
    with Client(Settings(redis_url=stack.redis_url)) as c:
        a = c.submit([path], PROMPT)
        b = c.submit([ImageInput(raw, "low")], PROMPT, api="responses")
        assert c.wait(a, timeout=30).status == "succeeded"
        done = list(c.as_completed([a, b], timeout=30))
        assert sorted(r.job_id for r in done) == sorted([a, b])
        got = c.get(b)
    assert got is not None and got.status == "succeeded"
    assert IMAGE_LINE.findall(got.output_text or "") == [sent_hash(raw, detail="low")]
    assert done[0].sources in ([str(path)], [None])


@pytest.mark.slow
async def test_async_client_mixed_batch(stack: Stack) -> None:
    good = make_image(411)
    async with AsyncClient(Settings(redis_url=stack.redis_url)) as c:
        ids = await c.submit_many(
            [
                SubmitRequest(images=[good], prompt=PROMPT),
                SubmitRequest(images=[], prompt=PROMPT),
                SubmitRequest(images=[good], prompt="see data:image/png;base64,iVBORw0KGgo="),
                SubmitRequest(images=["/definitely/not/here.png"], prompt=PROMPT),
                SubmitRequest(images=[good], prompt=PROMPT, max_output_tokens=0),
            ]
        )
        results = {r.job_id: r async for r in c.as_completed(ids, timeout=30)}
    codes = [results[i].error.code if results[i].error else None for i in ids]  # type: ignore[union-attr]
    assert results[ids[0]].status == "succeeded"
    assert codes[1:] == ["invalid_job", "prompt_contains_image", "invalid_image", None]
    # max_output_tokens=0 is "use the default" (falsy): it runs.
    assert results[ids[4]].status == "succeeded"


def test_unreachable_broker_raises_and_frees_the_job_id(stack: Stack) -> None:
    url = stack.idle_redis_url()
    settings = Settings(redis_url=url, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with Client(settings) as c:
        with pytest.raises(StorageUnavailableError):
            c.submit([make_image(421)], PROMPT, job_id="broker-down")
        r = c.get("broker-down")
    assert time.monotonic() - started < 30
    assert r is None  # forgotten: the same id can be submitted once the broker is back
    with Client(Settings(redis_url=url)) as c:
        assert c.submit([make_image(421)], PROMPT, job_id="broker-down") == "broker-down"
        assert (c.get("broker-down") or Result(job_id="x")).status == "queued"


def test_a_bad_item_does_not_orphan_earlier_jobs_in_the_batch(stack: Stack) -> None:
    url = stack.idle_redis_url()
    with Client(Settings(redis_url=url)) as c:
        with contextlib.suppress(Exception):
            c.submit_many(
                [
                    SubmitRequest(images=[make_image(431)], prompt=PROMPT, job_id="first"),
                    SubmitRequest(images=[12345], prompt=PROMPT, job_id="second"),  # type: ignore[list-item]
                ]
            )
        first = c.get("first")
        second = c.get("second")
    queued = redis.Redis.from_url(url).llen("interactive")
    assert first is not None and first.status == "queued" and queued == 1
    assert second is not None and second.status == "failed"
    assert second.error is not None and second.error.code == "invalid_job"
