"""One S3 client per process (per endpoint and region), shared by image reads and the stores."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.s3 import s3_client
from shared.settings import Settings
from shared.storage import build_stores


def test_one_client_per_endpoint_shared_by_the_stores() -> None:
    a = Settings(s3_endpoint_url="http://127.0.0.1:1", aws_region="us-east-1")
    b = Settings(s3_endpoint_url="http://127.0.0.1:2", aws_region="us-east-1")
    assert s3_client(a) is s3_client(a.model_copy())
    assert s3_client(a) is not s3_client(b)
    s3 = a.model_copy(update={"image_backend": "s3", "result_backend": "s3", "s3_bucket": "x"})
    redis = aioredis.from_url("redis://127.0.0.1:1/0")  # never connected
    images, results, _ = build_stores(s3, redis)
    assert images._s3 is results._s3 is s3_client(a)  # type: ignore[attr-defined]
