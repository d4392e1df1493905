"""Where images and results live: Redis (default, with TTLs) or S3, behind small Protocols.

>>> import redis.asyncio as aioredis
>>> from shared.settings import Settings
>>> redis_client = aioredis.from_url("redis://127.0.0.1:6399/0")  # connects on first use
>>> images, results, events = build_stores(Settings(), redis_client)
>>> type(images).__name__, type(results).__name__
('RedisImageStore', 'RedisResultStore')
"""

from shared.storage.base import ImageStore, JobEvents, ResultStore
from shared.storage.factory import build_stores
from shared.storage.redis_store import RedisImageStore, RedisJobEvents, RedisResultStore
from shared.storage.s3_store import S3ImageStore, S3ResultStore
from shared.storage.waiting import iter_results, wait_result

__all__ = [
    "ImageStore",
    "JobEvents",
    "RedisImageStore",
    "RedisJobEvents",
    "RedisResultStore",
    "ResultStore",
    "S3ImageStore",
    "S3ResultStore",
    "build_stores",
    "iter_results",
    "wait_result",
]
