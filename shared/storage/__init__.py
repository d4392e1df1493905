"""Where images and results live: Redis (default, with TTLs) or S3, behind small Protocols.

>>> from shared.storage import build_stores   # doctest: +SKIP
>>> images, results, events = build_stores(settings, redis_client)
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
