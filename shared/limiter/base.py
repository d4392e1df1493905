"""The limiter's interface (``Limiter``) and the values it hands out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from shared.limiter.keys import LimitKey

Priority = Literal["interactive", "bulk"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "bulk")


@dataclass(frozen=True)
class Reservation:
    """Capacity granted for one API call: settle it after success, release it after failure.

    ``tokens`` is what was reserved (prompt estimate + max output tokens); ``max_output_tokens``,
    when given at acquire, lets ``settle`` charge exactly what the API counted.
    """

    key: LimitKey
    tokens: int
    id: str
    priority: Priority = "interactive"
    max_output_tokens: int | None = None
    granted_at_ms: int = 0  # limiter time (Redis TIME) of the grant
    waited_s: float = 0.0  # time spent waiting for capacity
    images: int = 0  # images reserved (image-generation models' images-per-minute bucket)
    tenant: str | None = None


@dataclass(frozen=True)
class LimitSnapshot:
    """One limit as the fleet sees it now (``imgq limits``, metrics): the buckets and the queue.

    A bucket holds the limit and refills at limit/60 per second; ``*_level`` is what it holds now
    (negative: in debt after a call the API charged more than we reserved).
    """

    key: LimitKey
    tpm: int
    rpm: int
    tpm_source: str  # configured | discovered | default
    rpm_source: str
    tokens_level: float
    requests_level: float
    tokens_reserved: int  # part of what was taken by calls still in flight
    in_flight: int  # calls granted and not yet settled or released
    cooldown_s: float  # remaining fleet-wide pause
    resyncs: int  # times headers showed less left than we held
    waiting_interactive: int  # waiters in the fleet queue
    waiting_bulk: int
    processes: int  # processes that waited on this limit in the last few seconds
    ipm: int = 0  # images per minute (0: no such limit)
    images_level: float = 0.0

    @property
    def tokens_refill_per_s(self) -> float:
        return self.tpm / 60.0

    @property
    def requests_refill_per_s(self) -> float:
        return self.rpm / 60.0

    @property
    def waiting(self) -> int:
        return self.waiting_interactive + self.waiting_bulk

    @property
    def tokens_available(self) -> int:
        """Tokens that could be granted now (the level, floored at 0)."""
        return max(0, int(self.tokens_level))

    @property
    def tokens_used(self) -> int:
        """Tokens the bucket is short of full, minus the calls in flight: spent and not refilled."""
        return max(0, self.tpm - int(self.tokens_level) - self.tokens_reserved)

    @property
    def requests(self) -> int:
        """Requests the bucket is short of full."""
        return max(0, self.rpm - int(self.requests_level))

    def seconds_to_full(self) -> float:
        return max(0.0, (self.tpm - self.tokens_level) / self.tokens_refill_per_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.key.model,
            "account": self.key.account,
            "tpm": self.tpm,
            "rpm": self.rpm,
            "ipm": self.ipm,
            "tpm_source": self.tpm_source,
            "rpm_source": self.rpm_source,
            "tokens_level": round(self.tokens_level, 1),
            "requests_level": round(self.requests_level, 2),
            "images_level": round(self.images_level, 2),
            "tokens_refill_per_s": round(self.tokens_refill_per_s, 3),
            "seconds_to_full": round(self.seconds_to_full(), 3),
            "tokens_used": self.tokens_used,
            "tokens_reserved": self.tokens_reserved,
            "tokens_available": self.tokens_available,
            "requests": self.requests,
            "in_flight": self.in_flight,
            "waiting_interactive": self.waiting_interactive,
            "waiting_bulk": self.waiting_bulk,
            "processes": self.processes,
            "cooldown_s": round(self.cooldown_s, 3),
            "resyncs": self.resyncs,
        }


@runtime_checkable
class Limiter(Protocol):
    """Fleet-wide TPM/RPM (and images per minute) buckets. See the README, "Rate limiting"."""

    async def acquire(
        self,
        key: LimitKey,
        tokens: int,
        *,
        priority: Priority = "interactive",
        timeout: float | None = None,
        max_output_tokens: int | None = None,
        images: int = 0,
        tenant: str | None = None,
    ) -> Reservation: ...

    async def settle(
        self,
        reservation: Reservation,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        headers: Mapping[str, str] | None = None,
    ) -> None: ...

    async def release(
        self, reservation: Reservation, *, counted: bool, headers: Mapping[str, str] | None = None
    ) -> None: ...

    async def observe_headers(self, key: LimitKey, headers: Mapping[str, str]) -> None: ...

    async def cooldown(self, key: LimitKey, seconds: float) -> None: ...

    async def snapshot(self, key: LimitKey) -> LimitSnapshot: ...
