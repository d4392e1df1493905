"""End to end with S3 (moto's server): images and results in S3; s3:// image sources with Redis."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from producer.client import Client
from shared.settings import Settings
from tests.conftest import Sim
from tests.pipeline.conftest import WorkerFactory, make_image, sent_hash
from tests.storage.conftest import BUCKET

pytestmark = pytest.mark.slow
IMAGE_LINE = re.compile(r"IMAGE sha256=([0-9a-f]{16})")
PROMPT = "Describe this image."
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def keys(s3: Any, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def test_images_and_results_in_s3(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory, s3: Any, s3_endpoint: str
) -> None:
    worker_factory(
        simulator,
        concurrency=4,
        IMGQ_IMAGE_BACKEND="s3",
        IMGQ_RESULT_BACKEND="s3",
        IMGQ_S3_BUCKET=BUCKET,
        AWS_ENDPOINT_URL=s3_endpoint,
        **AWS,
    )
    settings = Settings(
        redis_url=redis_url,
        image_backend="s3",
        result_backend="s3",
        s3_bucket=BUCKET,
        s3_endpoint_url=s3_endpoint,
    )
    images = [make_image(301), make_image(302, size=(90, 60))]
    with Client(settings) as c:
        ids = [c.submit([img], PROMPT, metadata={"i": i}) for i, img in enumerate(images)]
        results = {r.job_id: r for r in c.as_completed(ids, timeout=30)}
    for i, job_id in enumerate(ids):
        r = results[job_id]
        assert r.status == "succeeded", r.error
        assert IMAGE_LINE.findall(r.output_text or "") == [sent_hash(images[i])]
        assert r.metadata == {"i": i}
    assert sorted(keys(s3, "imgq/results/")) == sorted(f"imgq/results/{j}.json" for j in ids)
    assert len(keys(s3, "imgq/images/")) == 2
    stored = s3.get_object(Bucket=BUCKET, Key=f"imgq/results/{ids[0]}.json")["Body"].read()
    assert b'"succeeded"' in stored
    r = redis.Redis.from_url(redis_url)
    assert r.keys("imgq:result:*") == [] and r.keys("imgq:img:*") == []  # nothing in Redis


def test_s3_image_source_with_redis_backends(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory, s3: Any, s3_endpoint: str
) -> None:
    worker_factory(simulator, concurrency=4, AWS_ENDPOINT_URL=s3_endpoint, **AWS)
    img = make_image(311, size=(64, 64))
    s3.put_object(Bucket=BUCKET, Key="photos/cat.png", Body=img)
    with Client(Settings(redis_url=redis_url)) as c:
        good = c.submit([f"s3://{BUCKET}/photos/cat.png"], PROMPT)
        missing = c.submit([f"s3://{BUCKET}/photos/none.png"], PROMPT)
        done = {r.job_id: r for r in c.as_completed([good, missing], timeout=30)}
    assert done[good].status == "succeeded", done[good].error
    assert IMAGE_LINE.findall(done[good].output_text or "") == [sent_hash(img)]
    assert done[good].sources == [f"s3://{BUCKET}/photos/cat.png"]
    assert done[missing].status == "failed"
    assert done[missing].error is not None
    assert done[missing].error.code == "image_fetch_failed"
    assert done[missing].attempts == 0  # no API call was spent on it
