"""Build the configured stores from Settings (clients are passed in, never built at import)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from shared.s3 import s3_client as shared_s3_client
from shared.settings import Settings
from shared.storage.base import ImageStore, JobEvents, ResultStore
from shared.storage.redis_store import RedisImageStore, RedisJobEvents, RedisResultStore
from shared.storage.s3_store import S3ImageStore, S3ResultStore


def build_stores(
    settings: Settings, redis_client: aioredis.Redis, s3_client: Any | None = None
) -> tuple[ImageStore, ResultStore, JobEvents]:
    """(image store, result store, events) as the settings ask; events always go through Redis."""
    needs_s3 = "s3" in (settings.image_backend, settings.result_backend)
    if needs_s3:
        if not settings.s3_bucket:
            raise ValueError("IMGQ_S3_BUCKET must be set when an S3 backend is selected")
        s3_client = s3_client or shared_s3_client(settings)
    images: ImageStore
    results: ResultStore
    if settings.image_backend == "s3":
        images = S3ImageStore(s3_client, bucket=settings.s3_bucket or "", prefix=settings.s3_prefix)
    else:
        images = RedisImageStore(redis_client, ttl_seconds=settings.image_ttl_seconds)
    if settings.result_backend == "s3":
        results = S3ResultStore(
            s3_client, bucket=settings.s3_bucket or "", prefix=settings.s3_prefix
        )
    else:
        results = RedisResultStore(redis_client, ttl_seconds=settings.result_ttl_seconds)
    return images, results, RedisJobEvents(redis_client)
