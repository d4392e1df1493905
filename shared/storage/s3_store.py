"""S3 implementations of the image and result stores (boto3 in a worker thread).

Works with AWS and S3-compatible servers (MinIO, moto's server) via ``Settings.s3_endpoint_url``.
Credentials come from the standard ``AWS_*`` variables; they never appear in errors.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import ImageNotFoundError, StorageUnavailableError
from shared.jobs import Result
from shared.s3 import parse_s3_ref

__all__ = ["S3ImageStore", "S3ResultStore", "parse_s3_ref"]

_MISSING = {"NoSuchKey", "404", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ImageStore:
    """Images under ``s3://<bucket>/<prefix>images/<sha256>`` (expire them with a lifecycle rule)."""

    def __init__(self, s3: Any, *, bucket: str, prefix: str = "imgq/") -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix

    def handles(self, ref: str) -> bool:
        return ref.startswith("s3://")

    async def put(self, data: bytes) -> str:
        key = f"{self._prefix}images/{hashlib.sha256(data).hexdigest()}"
        try:
            await asyncio.to_thread(self._s3.put_object, Bucket=self._bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailableError(f"could not store image in S3: {exc}") from exc
        return f"s3://{self._bucket}/{key}"

    async def get(self, ref: str) -> bytes:
        bucket, key = parse_s3_ref(ref)

        def read() -> bytes:
            return bytes(self._s3.get_object(Bucket=bucket, Key=key)["Body"].read())

        try:
            return await asyncio.to_thread(read)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ImageNotFoundError(f"no image at {ref}") from exc
            raise StorageUnavailableError(f"could not read image from S3: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailableError(f"could not read image from S3: {exc}") from exc

    async def presigned_url(self, ref: str, expires_seconds: int) -> str:
        """A short-lived GET URL for ``ref`` (signed locally: no request to S3)."""
        bucket, key = parse_s3_ref(ref)
        params = {"Bucket": bucket, "Key": key}
        url = await asyncio.to_thread(
            self._s3.generate_presigned_url, "get_object", Params=params, ExpiresIn=expires_seconds
        )
        return str(url)


class S3ResultStore:
    """Results as ``<prefix>results/<job_id>.json``; creation is conditional (If-None-Match)."""

    def __init__(self, s3: Any, *, bucket: str, prefix: str = "imgq/") -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}results/{job_id}.json"

    def _put(self, result: Result, **extra: Any) -> None:
        self._s3.put_object(
            Bucket=self._bucket,
            Key=self._key(result.job_id),
            Body=result.model_dump_json().encode(),
            ContentType="application/json",
            **extra,
        )

    def _get(self, job_id: str) -> Result | None:
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key(job_id))["Body"].read()
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        return Result.model_validate_json(body)

    async def create(self, result: Result) -> Result | None:
        try:
            await asyncio.to_thread(self._put, result, IfNoneMatch="*")
            return None
        except ClientError as exc:
            if _code(exc) not in _PRECONDITION:
                raise StorageUnavailableError(f"could not store job in S3: {exc}") from exc
        except BotoCoreError as exc:  # endpoint unreachable, timeouts: retryable, typed
            raise StorageUnavailableError(f"could not store job in S3: {exc}") from exc
        return await self.get(result.job_id)

    async def get(self, job_id: str) -> Result | None:
        try:
            return await asyncio.to_thread(self._get, job_id)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailableError(f"could not read result from S3: {exc}") from exc

    async def get_many(self, job_ids: Iterable[str]) -> list[Result | None]:
        return list(await asyncio.gather(*(self.get(j) for j in job_ids)))

    async def delete(self, job_id: str) -> None:
        try:
            await asyncio.to_thread(
                self._s3.delete_object, Bucket=self._bucket, Key=self._key(job_id)
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailableError(f"could not delete result from S3: {exc}") from exc

    async def put(self, result: Result, *, force: bool = False) -> bool:
        # S3 has no compare-and-set on content; a read-then-write guard is enough here because a
        # job is processed by one worker at a time (the broker's lease) and terminal writes win.
        if not force:
            current = await self.get(result.job_id)
            if current is not None and current.done:
                return False
        try:
            await asyncio.to_thread(self._put, result)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailableError(f"could not write result to S3: {exc}") from exc
        return True
