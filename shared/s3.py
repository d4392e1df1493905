"""S3 basics both image intake and the stores use: one reference parser, one client per process.

>>> parse_s3_ref("s3://bucket/photos/cat.jpg")
('bucket', 'photos/cat.jpg')
>>> parse_s3_ref("s3://bucket-only")
Traceback (most recent call last):
...
ValueError: not an s3://bucket/key reference: 's3://bucket-only'
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from shared.settings import Settings


def parse_s3_ref(ref: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); ``ValueError`` if either part is missing."""
    if ref[:5].lower() != "s3://":
        raise ValueError(f"not an s3://bucket/key reference: {ref!r}")
    bucket, _, key = ref[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"not an s3://bucket/key reference: {ref!r}")
    return bucket, key


_clients: dict[tuple[str | None, str], S3Client] = {}
_lock = threading.Lock()
# A client built before a fork must not be shared with the child (its connection pool is not).
os.register_at_fork(after_in_child=_clients.clear)


def s3_client(settings: Settings) -> S3Client:
    """This process's boto3 S3 client for the configured endpoint and region, built on first use.

    boto3 clients are thread-safe, and building one costs milliseconds and a credentials lookup:
    every image read and store in the process shares it. Credentials come from boto3's usual
    chain (``AWS_*`` variables, profiles, instance roles).
    """
    key = (settings.s3_endpoint_url, settings.aws_region)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                import boto3

                client = boto3.client(
                    "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.aws_region
                )
                _clients[key] = client
    return client
