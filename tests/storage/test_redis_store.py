"""Redis image and result stores and job events, against a real Redis process."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import redis.asyncio as aioredis

from shared.embedded_redis import free_port
from shared.errors import ImageNotFoundError, StorageUnavailableError
from shared.jobs import ErrorInfo, Result
from shared.settings import Settings
from shared.storage import (
    RedisImageStore,
    RedisJobEvents,
    RedisResultStore,
    S3ImageStore,
    S3ResultStore,
    build_stores,
)
from shared.storage.redis_store import IMAGE_PREFIX, RESULT_PREFIX

DAY = 24 * 3600


def result(job_id: str, status: str = "queued", text: str | None = None) -> Result:
    r = Result(job_id=job_id, status=status, output_text=text)  # type: ignore[arg-type]
    if status == "failed":
        r.error = ErrorInfo(code="api_error", message="boom", retryable=True)
    return r


# -- results --------------------------------------------------------------------------------------
async def test_create_only_if_absent(aredis: aioredis.Redis) -> None:
    store = RedisResultStore(aredis, ttl_seconds=DAY)
    assert await store.create(result("j1", text="first")) is None
    existing = await store.create(result("j1", status="running", text="second"))
    assert existing is not None
    assert (existing.status, existing.output_text) == ("queued", "first")
    stored = await store.get("j1")
    assert stored is not None and stored.output_text == "first"  # untouched


async def test_put_never_overwrites_a_terminal_result_unless_forced(aredis: aioredis.Redis) -> None:
    store = RedisResultStore(aredis, ttl_seconds=DAY)
    assert await store.put(result("j2", "running"))  # no document yet: written
    assert await store.put(result("j2", "running", text="progress"))  # non-terminal: overwritten
    assert await store.put(result("j2", "succeeded", text="answer"))
    for late in (result("j2", "running"), result("j2", "failed"), result("j2", "queued")):
        assert await store.put(late) is False
    r = await store.get("j2")
    assert r is not None and (r.status, r.output_text) == ("succeeded", "answer")
    assert await store.put(result("j2", "failed"), force=True)
    r = await store.get("j2")
    assert r is not None and r.status == "failed" and r.error is not None


async def test_failed_is_terminal_too(aredis: aioredis.Redis) -> None:
    store = RedisResultStore(aredis, ttl_seconds=DAY)
    await store.put(result("j3", "failed"))
    assert await store.put(result("j3", "succeeded", text="late")) is False


async def test_put_over_a_corrupt_document_writes(aredis: aioredis.Redis) -> None:
    store = RedisResultStore(aredis, ttl_seconds=DAY)
    await aredis.set(RESULT_PREFIX + "j4", b"not json")
    assert await store.put(result("j4", "succeeded"))
    r = await store.get("j4")
    assert r is not None and r.status == "succeeded"


async def test_ttls_are_set_on_every_write(aredis: aioredis.Redis) -> None:
    store = RedisResultStore(aredis, ttl_seconds=500)
    await store.create(result("t1"))
    assert 490 <= await aredis.ttl(RESULT_PREFIX + "t1") <= 500
    await aredis.expire(RESULT_PREFIX + "t1", 10)
    await store.put(result("t1", "succeeded"))
    assert 490 <= await aredis.ttl(RESULT_PREFIX + "t1") <= 500  # refreshed by a write
    await aredis.expire(RESULT_PREFIX + "t1", 10)
    assert await store.put(result("t1", "failed")) is False
    assert await aredis.ttl(RESULT_PREFIX + "t1") <= 10  # a refused write changes nothing
    images = RedisImageStore(aredis, ttl_seconds=300)
    ref = await images.put(b"bytes")
    assert 290 <= await aredis.ttl(ref.removeprefix("redis:")) <= 300


async def test_get_many_keeps_order_and_gaps(aredis: aioredis.Redis) -> None:
    store = RedisResultStore(aredis, ttl_seconds=DAY)
    for j in ("a", "b", "c"):
        await store.create(result(j, text=j))
    got = await store.get_many(["c", "missing", "a", "b"])
    assert [r.output_text if r else None for r in got] == ["c", None, "a", "b"]
    assert await store.get_many([]) == []
    assert await store.get_many(iter(["b"])) == [await store.get("b")]
    assert await store.get("missing") is None


# -- images ---------------------------------------------------------------------------------------
async def test_images_are_content_addressed(aredis: aioredis.Redis) -> None:
    store = RedisImageStore(aredis, ttl_seconds=DAY)
    data = b"\x89PNG fake but bytes are bytes"
    ref = await store.put(data)
    assert ref == "redis:" + IMAGE_PREFIX + hashlib.sha256(data).hexdigest()
    assert store.handles(ref) and not store.handles("s3://b/k")
    assert await store.put(data) == ref  # one key for identical uploads
    assert len(await aredis.keys(IMAGE_PREFIX + "*")) == 1
    assert await store.get(ref) == data
    assert await store.put(data + b"!") != ref


async def test_missing_image_is_image_not_found(aredis: aioredis.Redis) -> None:
    store = RedisImageStore(aredis, ttl_seconds=DAY)
    ref = await store.put(b"soon gone")
    await aredis.delete(ref.removeprefix("redis:"))
    with pytest.raises(ImageNotFoundError) as info:
        await store.get(ref)
    assert info.value.code == "image_not_found" and not info.value.retryable
    with pytest.raises(ImageNotFoundError):
        await store.get("redis:" + IMAGE_PREFIX + "0" * 64)


async def test_unreachable_redis_is_storage_unavailable() -> None:
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", retry_on_error=[])
    results = RedisResultStore(dead, ttl_seconds=DAY)
    images = RedisImageStore(dead, ttl_seconds=DAY)
    calls = [
        results.create(result("x")),
        results.get("x"),
        results.get_many(["x", "y"]),
        results.put(result("x")),
        images.put(b"x"),
        images.get("redis:" + IMAGE_PREFIX + "x"),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailableError) as info:
            await call
        assert info.value.retryable
    await RedisJobEvents(dead).publish("x", "succeeded")  # best effort: never raises
    await dead.aclose()


# -- events ---------------------------------------------------------------------------------------
async def test_events_round_trip(aredis: aioredis.Redis) -> None:
    events = RedisJobEvents(aredis, channel="imgq:test-events")
    sub = events.subscribe()
    first = await anext(sub)  # subscribing; nothing published yet: a heartbeat
    assert first == ("", "")
    await events.publish("job-1", "running")
    await events.publish("job-1", "succeeded")
    seen = []
    while len(seen) < 2:
        item = await asyncio.wait_for(anext(sub), 5)
        if item != ("", ""):
            seen.append(item)
    assert seen == [("job-1", "running"), ("job-1", "succeeded")]
    await sub.aclose()  # type: ignore[attr-defined]
    assert await aredis.pubsub_numsub("imgq:test-events") == [(b"imgq:test-events", 0)]


# -- factory --------------------------------------------------------------------------------------
async def test_build_stores_picks_backends(aredis: aioredis.Redis) -> None:
    images, results, events = build_stores(Settings(redis_url="redis://unused"), aredis)
    assert isinstance(images, RedisImageStore)
    assert isinstance(results, RedisResultStore)
    assert isinstance(events, RedisJobEvents)
    with pytest.raises(ValueError, match="IMGQ_S3_BUCKET"):
        build_stores(Settings(result_backend="s3"), aredis)
    images, results, _ = build_stores(
        Settings(image_backend="s3", s3_bucket="b"), aredis, s3_client=object()
    )
    assert isinstance(images, S3ImageStore) and isinstance(results, RedisResultStore)
    images, results, _ = build_stores(
        Settings(result_backend="s3", s3_bucket="b"), aredis, s3_client=object()
    )
    assert isinstance(images, RedisImageStore) and isinstance(results, S3ResultStore)
