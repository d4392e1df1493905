"""Storage interfaces. Implementations: Redis (redis_store.py) and S3 (s3_store.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from shared.jobs import Result


class ImageStore(Protocol):
    """Content-addressed image bytes; a ``ref`` is what travels in the broker message."""

    def handles(self, ref: str) -> bool: ...

    async def put(self, data: bytes) -> str: ...

    async def get(self, ref: str) -> bytes:
        """The bytes behind ``ref``; raises ImageNotFoundError when expired or missing."""
        ...


class ResultStore(Protocol):
    """One Result document per job id."""

    async def create(self, result: Result) -> Result | None:
        """Store ``result`` if the job id is new; otherwise return the existing result untouched."""
        ...

    async def get(self, job_id: str) -> Result | None: ...

    async def get_many(self, job_ids: Iterable[str]) -> list[Result | None]: ...

    async def delete(self, job_id: str) -> None:
        """Forget a job (used when it could not be enqueued, so its id stays free)."""
        ...

    async def put(self, result: Result, *, force: bool = False) -> bool:
        """Write ``result`` unless the stored one is already terminal (and ``force`` is off).

        Returns whether it was written: a redelivered job never overwrites a finished one.
        """
        ...


class JobEvents(Protocol):
    """Notifications that a job changed status, so waiters need not poll hard."""

    async def publish(self, job_id: str, status: str) -> None: ...

    def subscribe(self) -> AsyncIterator[tuple[str, str]]:
        """Yield ``(job_id, status)`` as they are published (best effort: waiters re-check)."""
        ...
