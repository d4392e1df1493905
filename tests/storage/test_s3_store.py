"""S3 image and result stores against a real S3 API (moto's server over HTTP)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from shared.embedded_redis import free_port
from shared.errors import ImageNotFoundError, StorageUnavailableError
from shared.jobs import ErrorInfo, Result
from shared.storage import S3ImageStore, S3ResultStore
from shared.storage.s3_store import parse_s3_ref
from tests.storage.conftest import BUCKET, s3_client


def result(job_id: str, status: str = "queued", text: str | None = None) -> Result:
    r = Result(job_id=job_id, status=status, output_text=text)  # type: ignore[arg-type]
    if status == "failed":
        r.error = ErrorInfo(code="timeout", message="slow", retryable=True)
    return r


async def test_image_store_is_content_addressed(s3: Any) -> None:
    store = S3ImageStore(s3, bucket=BUCKET, prefix="p/")
    data = b"\x89PNG\r\n\x1a\n not really"
    ref = await store.put(data)
    assert ref == f"s3://{BUCKET}/p/images/{hashlib.sha256(data).hexdigest()}"
    assert store.handles(ref) and not store.handles("redis:imgq:img:x")
    assert await store.put(data) == ref
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == [ref.removeprefix(f"s3://{BUCKET}/")]
    assert await store.get(ref) == data


async def test_missing_image_is_image_not_found(s3: Any) -> None:
    store = S3ImageStore(s3, bucket=BUCKET)
    with pytest.raises(ImageNotFoundError):
        await store.get(f"s3://{BUCKET}/imgq/images/{'0' * 64}")


async def test_result_create_is_conditional(s3: Any) -> None:
    store = S3ResultStore(s3, bucket=BUCKET)
    assert await store.create(result("r1", text="first")) is None
    existing = await store.create(result("r1", "running", text="second"))
    assert existing is not None and existing.output_text == "first"
    body = s3.get_object(Bucket=BUCKET, Key="imgq/results/r1.json")["Body"].read()
    assert json.loads(body)["output_text"] == "first"  # the object itself is untouched
    head = s3.head_object(Bucket=BUCKET, Key="imgq/results/r1.json")
    assert head["ContentType"] == "application/json"


async def test_result_put_guards_terminal_results(s3: Any) -> None:
    store = S3ResultStore(s3, bucket=BUCKET)
    assert await store.put(result("r2", "running"))
    assert await store.put(result("r2", "succeeded", text="answer"))
    assert await store.put(result("r2", "running")) is False
    assert await store.put(result("r2", "failed")) is False
    got = await store.get("r2")
    assert got is not None and (got.status, got.output_text) == ("succeeded", "answer")
    assert await store.put(result("r2", "failed"), force=True)
    got = await store.get("r2")
    assert got is not None and got.status == "failed"


async def test_result_get_and_get_many(s3: Any) -> None:
    store = S3ResultStore(s3, bucket=BUCKET, prefix="")
    assert await store.get("nope") is None
    for j in ("a", "b"):
        await store.create(result(j, text=j))
    got = await store.get_many(["b", "nope", "a"])
    assert [r.output_text if r else None for r in got] == ["b", None, "a"]
    assert await store.get_many([]) == []


@pytest.mark.parametrize("ref", ["s3://", "s3://bucket", "s3://bucket/", "s3:///key"])
def test_parse_s3_ref_refuses_incomplete_refs(ref: str) -> None:
    with pytest.raises(ValueError):
        parse_s3_ref(ref)


def test_parse_s3_ref() -> None:
    assert parse_s3_ref("s3://b/a/b/c.png") == ("b", "a/b/c.png")


async def test_unreachable_s3_is_storage_unavailable(s3_endpoint: str) -> None:
    # One attempt, short timeouts: the store must turn botocore's errors into ours.
    dead = s3_client(
        f"http://127.0.0.1:{free_port()}",
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=1,
        read_timeout=1,
    )
    images = S3ImageStore(dead, bucket=BUCKET)
    results = S3ResultStore(dead, bucket=BUCKET)
    for call in (
        images.put(b"x"),
        images.get(f"s3://{BUCKET}/k"),
        results.get("x"),
        results.get_many(["x"]),
        results.put(result("x"), force=True),
        results.put(result("x")),
        results.create(result("x")),
    ):
        with pytest.raises(StorageUnavailableError) as info:
            await call
        assert "testing" not in info.value.message  # credentials never in errors


async def test_missing_bucket_is_storage_unavailable(s3: Any) -> None:
    results = S3ResultStore(s3, bucket="no-such-bucket")
    with pytest.raises(StorageUnavailableError):
        await results.create(result("x"))
    with pytest.raises(StorageUnavailableError):
        await results.get("x")
