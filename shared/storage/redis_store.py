"""Redis implementations of the storage Protocols (redis.asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.errors import ImageNotFoundError, StorageUnavailableError
from shared.jobs import Result
from shared.lua import load_lua

IMAGE_PREFIX = "imgq:img:"
RESULT_PREFIX = "imgq:result:"
EVENTS_CHANNEL = "imgq:events"
REF_SCHEME = "redis:"
RESUBSCRIBE_SECONDS = 1.0


LARGE_JSON_BYTES = 256 * 1024


def _parse_all(raw: list[Any]) -> list[Result | None]:
    return [Result.model_validate_json(r) if r else None for r in raw]


class RedisImageStore:
    """Images under ``imgq:img:<sha256>`` with a TTL; identical uploads share one key."""

    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int) -> None:
        self._r = client
        self._ttl = ttl_seconds

    def handles(self, ref: str) -> bool:
        return ref.startswith(REF_SCHEME)

    async def put(self, data: bytes) -> str:
        key = IMAGE_PREFIX + hashlib.sha256(data).hexdigest()
        try:
            await self._r.set(key, data, ex=self._ttl)
        except RedisError as exc:
            raise StorageUnavailableError(f"could not store image in Redis: {exc}") from exc
        return REF_SCHEME + key

    async def get(self, ref: str) -> bytes:
        key = ref.removeprefix(REF_SCHEME)
        try:
            data = await self._r.get(key)
        except RedisError as exc:
            raise StorageUnavailableError(f"could not read image from Redis: {exc}") from exc
        if data is None:
            raise ImageNotFoundError(
                "the uploaded image is no longer stored (expired or deleted); submit the job again"
            )
        return data if isinstance(data, bytes) else str(data).encode()


class RedisResultStore:
    """Results as JSON under ``imgq:result:<job_id>`` with a TTL."""

    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int) -> None:
        self._r = client
        self._ttl = ttl_seconds
        self._put_script = client.register_script(load_lua("shared.storage", "result_put.lua"))

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    @staticmethod
    def key(job_id: str) -> str:
        """Where ``job_id``'s result lives (workers write it together with the job's lease)."""
        return RESULT_PREFIX + job_id

    async def create(self, result: Result) -> Result | None:
        key = RESULT_PREFIX + result.job_id
        try:
            created = await self._r.set(key, result.model_dump_json(), ex=self._ttl, nx=True)
            if created:
                return None
            existing = await self._r.get(key)
        except RedisError as exc:
            raise StorageUnavailableError(f"could not store job in Redis: {exc}") from exc
        return Result.model_validate_json(existing) if existing else None

    async def get(self, job_id: str) -> Result | None:
        return (await self.get_many([job_id]))[0]

    async def get_many(self, job_ids: Iterable[str]) -> list[Result | None]:
        keys = [RESULT_PREFIX + j for j in job_ids]
        if not keys:
            return []
        try:
            raw: list[Any] = await self._r.mget(keys)
        except RedisError as exc:
            raise StorageUnavailableError(f"could not read results from Redis: {exc}") from exc
        if sum(len(r) for r in raw if r) >= LARGE_JSON_BYTES:  # big answers: parse off the loop
            return await asyncio.to_thread(_parse_all, raw)
        return _parse_all(raw)

    async def delete(self, job_id: str) -> None:
        try:
            await self._r.delete(RESULT_PREFIX + job_id)
        except RedisError as exc:
            raise StorageUnavailableError(f"could not delete job from Redis: {exc}") from exc

    async def put(self, result: Result, *, force: bool = False) -> bool:
        key = RESULT_PREFIX + result.job_id
        try:
            written = await self._put_script(
                keys=[key], args=[result.model_dump_json(), self._ttl, "1" if force else "0"]
            )
        except RedisError as exc:
            raise StorageUnavailableError(f"could not write result to Redis: {exc}") from exc
        return bool(written)


class RedisJobEvents:
    """Status changes on one pub/sub channel: ``<job_id> <status>``."""

    def __init__(self, client: aioredis.Redis, channel: str = EVENTS_CHANNEL) -> None:
        self._r = client
        self._channel = channel
        self.channel = channel  # workers publish inside their final write's script

    def message(self, job_id: str, status: str) -> str:
        return f"{job_id} {status}"

    async def publish(self, job_id: str, status: str) -> None:
        # Best effort: waiters also re-check the store periodically.
        with contextlib.suppress(RedisError):
            await self._r.publish(self._channel, self.message(job_id, status))

    async def subscribe(self) -> AsyncIterator[tuple[str, str]]:
        """Events as they come; heartbeats ``("", "")`` every second, also while Redis is
        unreachable (the subscription is made again once it is back: waiters re-check)."""
        while True:
            pubsub = self._r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        yield ("", "")  # heartbeat: lets waiters re-check and time out
                        continue
                    data = msg["data"]
                    text = data.decode() if isinstance(data, bytes) else str(data)
                    job_id, _, status = text.partition(" ")
                    yield (job_id, status)
            except (RedisError, OSError):
                yield ("", "")
                await asyncio.sleep(RESUBSCRIBE_SECONDS)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.unsubscribe(self._channel)
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
