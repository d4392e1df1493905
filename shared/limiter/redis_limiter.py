"""``RedisLimiter``: the fleet-wide TPM/RPM limiter (sliding window log in Redis, see scripts.py).

Waiting happens in ``WaitLine`` (one per limit per process): no event-loop blocking, no Redis
connection per waiter.

Example (inside a coroutine)::

    limiter = RedisLimiter(redis.asyncio.Redis.from_url(url), LimitsConfig())
    r = await limiter.acquire(LimitKey("gpt-4o", fp), 1200, max_output_tokens=300)
    ...  # call the API
    await limiter.settle(r, prompt_tokens=880, completion_tokens=120)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.errors import CapacityWaitTimeoutError, StorageUnavailableError
from shared.limiter import scripts
from shared.limiter.base import LimitSnapshot, Priority, Reservation
from shared.limiter.config import LimitsConfig
from shared.limiter.headers import parse_ratelimit_headers
from shared.limiter.keys import LimitKey, redis_keys, registry_key
from shared.limiter.waitline import Ask, WaitLine

log = logging.getLogger(__name__)


class RedisLimiter:
    """Implements ``Limiter`` on Redis; one instance per process (and event loop)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: LimitsConfig,
        *,
        clock: Callable[[], float] | None = None,
        ttl_s: float = 24 * 3600.0,
        scan_cap: int = 2000,
        max_redis_calls: int = 16,
        fast_asks: int = 4,
    ) -> None:
        self.redis = redis
        self.config = config
        # None: Redis's own TIME (one clock for all hosts). A callable (seconds) is for tests.
        self._clock = clock
        self._ttl_ms = round(ttl_s * 1000)
        self._scan_cap = scan_cap
        # Bounds this process's concurrent script calls, whatever the number of callers: waiters
        # never hold a connection, and the pool is never exhausted.
        self._calls = asyncio.Semaphore(max_redis_calls)
        self._fast_asks = fast_asks
        self._rescore = 1 if config.count_from == "answer" else 0
        self._lines: dict[LimitKey, WaitLine] = {}
        self._registered: set[LimitKey] = set()
        self._headerless: set[LimitKey] = set()
        self._scripts = {
            name: redis.register_script(getattr(scripts, name))
            for name in ("ACQUIRE", "SETTLE", "RELEASE", "OBSERVE", "COOLDOWN", "SNAPSHOT")
        }

    # -- plumbing -------------------------------------------------------------------------------
    def _limit_args(self, key: LimitKey) -> list[int]:
        cfg = self.config.configured_for(key.model)
        dflt = self.config.default_for(key.model)
        return [
            (cfg.tpm or 0) if cfg else 0,
            (cfg.rpm or 0) if cfg else 0,
            dflt.tpm or 0,
            dflt.rpm or 0,
        ]

    async def _run(self, name: str, key: LimitKey, *args: Any) -> Any:
        now = "" if self._clock is None else str(round(self._clock() * 1000))
        grace = round(self.config.inflight_grace_s * 1000)
        argv = [now, self.config.window_ms, self._ttl_ms, grace, *args]
        try:
            async with self._calls:
                return await self._scripts[name](
                    keys=redis_keys(key, prefix=self.config.prefix).all(), args=argv
                )
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def _register(self, key: LimitKey) -> None:
        if key not in self._registered:
            self._registered.add(key)  # before the await: one SADD per key, not one per caller
            try:
                async with self._calls:
                    await self.redis.sadd(
                        registry_key(self.config.prefix), f"{key.account} {key.model}"
                    )
            except BaseException:
                self._registered.discard(key)
                raise

    async def ask(self, key: LimitKey, tokens: int, rid: str) -> Ask:
        """One ACQUIRE script call (``WaitLine`` decides when)."""
        out = await self._run("ACQUIRE", key, tokens, *self._limit_args(key), rid, self._scan_cap)
        return Ask(*(int(x) for x in out))

    # -- Limiter ---------------------------------------------------------------------------------
    async def acquire(
        self,
        key: LimitKey,
        tokens: int,
        *,
        priority: Priority = "interactive",
        timeout: float | None = None,
        max_output_tokens: int | None = None,
    ) -> Reservation:
        """Wait until both the TPM and the RPM window grant ``tokens`` and one request."""
        if tokens <= 0:
            raise ValueError(f"tokens must be positive, got {tokens}")
        if priority not in ("interactive", "bulk"):
            raise ValueError(f"unknown priority {priority!r}")
        await self._register_safe(key)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = WaitLine(
                key, self, burst=self.config.interactive_burst,
                max_poll_s=self.config.max_poll_s, fast_asks=self._fast_asks,
            )  # fmt: skip
        return await line.acquire(tokens, priority, timeout, max_output_tokens)

    async def _register_safe(self, key: LimitKey) -> None:
        try:
            await self._register(key)
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def _wake(self, key: LimitKey) -> None:
        line = self._lines.get(key)
        if line is not None:
            line.wake()

    async def give_back(self, key: LimitKey, rid: str) -> None:
        """A grant nobody will use (its waiter gave up at that instant): return it."""
        try:
            await self._run("RELEASE", key, rid, 0, 0)
        except StorageUnavailableError:
            log.warning("limiter: could not give back a grant on %s", key.model)

    async def settle(
        self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Correct the grant to what the API counted at admission.

        With ``max_output_tokens`` known: ``prompt_tokens + max_output_tokens`` (the API's own
        count; the difference to our prompt estimate is refunded or charged). Without it the split
        of the reservation is unknown, so the charge is ``max(reserved, prompt + completion)``.
        Redis errors are logged, not raised: the call succeeded, and the entry leaves the window
        anyway.
        """
        if reservation.max_output_tokens is not None:
            charged = prompt_tokens + reservation.max_output_tokens
        else:
            charged = max(reservation.tokens, prompt_tokens + completion_tokens)
        try:
            await self._run(
                "SETTLE", reservation.key, reservation.id, max(0, charged), self._rescore
            )
        except StorageUnavailableError:
            log.warning("limiter: settle failed on %s", reservation.key.model)
        if charged < reservation.tokens:
            self._wake(reservation.key)

    async def release(self, reservation: Reservation, *, counted: bool) -> None:
        """After a failed call: ``counted=False`` gives the tokens and the request back (the API
        did not admit it: 429, connection refused); ``counted=True`` keeps the charge."""
        try:
            await self._run(
                "RELEASE", reservation.key, reservation.id, 1 if counted else 0, self._rescore
            )
        except StorageUnavailableError:
            log.warning("limiter: release failed on %s", reservation.key.model)
        if not counted:
            self._wake(reservation.key)

    async def observe_headers(self, key: LimitKey, headers: Mapping[str, str]) -> None:
        """Discover limits and resync the window from an answer's ``x-ratelimit-*`` headers."""
        h = parse_ratelimit_headers(headers)
        if h.empty:
            # Recorded once per process (ends the probe phase, see scripts.ACQUIRE), then skipped.
            if key in self._headerless:
                return
            self._headerless.add(key)

        def opt(v: int | None) -> str:
            return "" if v is None else str(v)

        try:
            await self._run(
                "OBSERVE", key,
                opt(h.limit_tokens), opt(h.limit_requests),
                opt(h.remaining_tokens), opt(h.remaining_requests),
                *self._limit_args(key), self.config.resync_tolerance, "ext:" + uuid.uuid4().hex,
            )  # fmt: skip
        except StorageUnavailableError:
            log.warning("limiter: could not record rate-limit headers for %s", key.model)

    async def cooldown(self, key: LimitKey, seconds: float) -> None:
        """Pause every process on this limit for ``seconds`` (the longest pause wins)."""
        if seconds > 0:
            await self._run("COOLDOWN", key, max(1, round(seconds * 1000)))

    async def snapshot(self, key: LimitKey) -> LimitSnapshot:
        out = await self._run("SNAPSHOT", key, *self._limit_args(key))
        _now, tpm, rpm, ts, rs, tok, req, res, cd, resyncs, age = out
        return LimitSnapshot(
            key=key,
            tpm=int(tpm),
            rpm=int(rpm),
            tpm_source=_text(ts),
            rpm_source=_text(rs),
            tokens_used=int(tok) - int(res),
            tokens_reserved=int(res),
            requests=int(req),
            cooldown_s=int(cd) / 1000.0,
            resyncs=int(resyncs),
            window_s=self.config.window_ms / 1000.0,
            oldest_age_s=None if int(age) < 0 else int(age) / 1000.0,
        )

    async def known_keys(self) -> list[LimitKey]:
        """Every limit any process registered (for ``imgq limits``)."""
        members = await self.redis.smembers(registry_key(self.config.prefix))
        out = []
        for m in members:
            account, _, model = _text(m).partition(" ")
            out.append(LimitKey(model=model, account=account))
        return sorted(out, key=lambda k: (k.model, k.account))

    async def aclose(self) -> None:
        """Stop the pumps (waiters get ``CapacityWaitTimeoutError``)."""
        for line in self._lines.values():
            line.fail_all(CapacityWaitTimeoutError("limiter closed"))


def _unavailable(exc: Exception) -> StorageUnavailableError:
    return StorageUnavailableError(f"limiter: Redis unavailable ({type(exc).__name__})")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
