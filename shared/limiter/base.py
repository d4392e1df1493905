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


@dataclass(frozen=True)
class LimitSnapshot:
    """One limit as the fleet sees it now (``imgq limits``, metrics)."""

    key: LimitKey
    tpm: int
    rpm: int
    tpm_source: str  # configured | discovered | default
    rpm_source: str
    tokens_used: int  # in the window, calls done (settled or counted)
    tokens_reserved: int  # in the window, calls in flight
    requests: int  # requests in the window
    cooldown_s: float  # remaining fleet-wide pause
    resyncs: int  # times headers showed usage we did not know about
    window_s: float
    oldest_age_s: float | None  # age of the oldest grant still in the window

    @property
    def tokens_available(self) -> int:
        return max(0, self.tpm - self.tokens_used - self.tokens_reserved)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.key.model,
            "account": self.key.account,
            "tpm": self.tpm,
            "rpm": self.rpm,
            "tpm_source": self.tpm_source,
            "rpm_source": self.rpm_source,
            "tokens_used": self.tokens_used,
            "tokens_reserved": self.tokens_reserved,
            "tokens_available": self.tokens_available,
            "requests": self.requests,
            "cooldown_s": round(self.cooldown_s, 3),
            "resyncs": self.resyncs,
            "window_s": self.window_s,
        }


@runtime_checkable
class Limiter(Protocol):
    """Fleet-wide TPM/RPM limits. See the README, "Rate limiting"."""

    async def acquire(
        self,
        key: LimitKey,
        tokens: int,
        *,
        priority: Priority = "interactive",
        timeout: float | None = None,
        max_output_tokens: int | None = None,
    ) -> Reservation: ...

    async def settle(
        self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int
    ) -> None: ...

    async def release(self, reservation: Reservation, *, counted: bool) -> None: ...

    async def observe_headers(self, key: LimitKey, headers: Mapping[str, str]) -> None: ...

    async def cooldown(self, key: LimitKey, seconds: float) -> None: ...

    async def snapshot(self, key: LimitKey) -> LimitSnapshot: ...
