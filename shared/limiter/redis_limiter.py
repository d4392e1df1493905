"""``RedisLimiter``: the fleet-wide limiter — token, request and image buckets per (account, model)
and one fleet-wide queue of waiters, all in one Lua script (``bucket.lua``) on Redis time.

Example (inside a coroutine)::

    limiter = RedisLimiter(redis.asyncio.Redis.from_url(url), LimitsConfig())
    r = await limiter.acquire(LimitKey("gpt-4o", fp), 1200, max_output_tokens=300)
    ...  # call the API
    await limiter.settle(r, prompt_tokens=880, completion_tokens=120, headers=raw.headers)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.errors import CapacityWaitTimeoutError, StorageUnavailableError
from shared.limiter.base import LimitSnapshot, Priority, Reservation
from shared.limiter.config import LimitsConfig
from shared.limiter.headers import parse_ratelimit_headers
from shared.limiter.keys import REGISTRY_MAX, LimitKey, model_part, redis_keys, registry_key
from shared.limiter.scripts import bucket_script
from shared.limiter.waitline import Pumped, Waiter, WaitLine

log = logging.getLogger(__name__)

_NO_HEADERS = ["0", "", "", "", "", "", "", "0"]
_REGISTER_EVERY_S = 600.0


class RedisLimiter:
    """Implements ``Limiter`` on Redis; one instance per process (and event loop)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: LimitsConfig,
        *,
        clock: Callable[[], float] | None = None,
        ttl_s: float = 24 * 3600.0,
        max_redis_calls: int = 16,
        fast_asks: int = 4,
    ) -> None:
        self.redis = redis
        self.config = config
        # None: Redis's own TIME (one clock for all hosts). A callable (seconds) is for tests.
        self._clock = clock
        self._ttl_ms = round(ttl_s * 1000)
        # Bounds this process's concurrent script calls, whatever the number of callers: waiters
        # never hold a connection, and the pool is never exhausted.
        self._calls = asyncio.Semaphore(max_redis_calls)
        self._fast_asks = fast_asks
        self.process_id = uuid.uuid4().hex[:16]  # this process in the fleet queue
        self._lines: dict[LimitKey, WaitLine] = {}
        self._registered: dict[LimitKey, float] = {}
        self._headerless: set[LimitKey] = set()
        self._script = redis.register_script(bucket_script())  # EVALSHA; loaded once per server

    # -- plumbing -------------------------------------------------------------------------------
    def _common(self, op: str, key: LimitKey) -> list[Any]:
        cfg = self.config.configured_for(key.model)
        dflt = self.config.default_for(key.model)
        now = "" if self._clock is None else str(round(self._clock() * 1000))
        return [
            op, now, self._ttl_ms, round(self.config.inflight_grace_s * 1000),
            (cfg.tpm or 0) if cfg else 0, (cfg.rpm or 0) if cfg else 0,
            (cfg.ipm or 0) if cfg else 0, dflt.tpm or 0, dflt.rpm or 0, dflt.ipm or 0,
            round(self.config.margin_s * 1000), redis_keys(key, prefix=self.config.prefix).grants_prefix,
        ]  # fmt: skip

    async def _run(self, op: str, key: LimitKey, *args: Any) -> Any:
        argv = [*self._common(op, key), *args]
        try:
            async with self._calls:
                return await self._script(
                    keys=redis_keys(key, prefix=self.config.prefix).all(), args=argv
                )
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def _headers_args(
        self, headers: Mapping[str, str] | None, *, tolerance: float | None = None
    ) -> list[str]:
        if headers is None:
            return _NO_HEADERS
        h = parse_ratelimit_headers(headers)
        tol = self.config.resync_tolerance if tolerance is None else tolerance

        def opt(v: int | None) -> str:
            return "" if v is None else str(v)

        return ["1", opt(h.limit_tokens), opt(h.limit_requests), opt(h.remaining_tokens),
                opt(h.remaining_requests), "", "", str(tol)]  # fmt: skip

    async def _register(self, key: LimitKey) -> None:
        """Keep ``key`` in the bounded registry ``imgq limits`` reads (refreshed every 10 min)."""
        now = time.monotonic()
        if now - self._registered.get(key, -1e9) < _REGISTER_EVERY_S:
            return
        self._registered[key] = now  # before the await: one write per key, not one per caller
        reg = registry_key(self.config.prefix)
        try:
            async with self._calls:
                ms = round(time.time() * 1000)
                pipe = self.redis.pipeline(transaction=False)
                pipe.zadd(reg, {f"{key.account} {model_part(key.model)}": ms})
                pipe.zremrangebyscore(reg, "-inf", ms - self._ttl_ms)
                pipe.zremrangebyrank(reg, 0, -REGISTRY_MAX - 1)
                pipe.pexpire(reg, self._ttl_ms)
                await pipe.execute()
        except RedisError as exc:
            self._registered.pop(key, None)
            raise _unavailable(exc) from exc

    async def pump(self, key: LimitKey, new: Sequence[Waiter], cancel: Sequence[str]) -> Pumped:
        """One pump call (``WaitLine`` decides when): enqueue, cancel, grant, collect."""
        cfg = self.config
        args: list[Any] = [self.process_id, round(cfg.waiter_alive_s * 1000),
                           cfg.interactive_burst, cfg.max_grants, cfg.interactive_reserve,
                           len(new)]  # fmt: skip
        for w in new:
            ttl = 0 if w.timeout is None else round(w.timeout * 1000) + 1000
            args += [w.id, w.tokens, w.images, "b" if w.priority == "bulk" else "i",
                     _tenant(w.tenant), self.config.weight(w.tenant), ttl]  # fmt: skip
        args += [len(cancel), *cancel]
        out = await self._run("pump", key, *args)
        now, tpm, rpm, ipm, hint = (int(x) for x in out[:5])
        rest = out[6:]
        outcomes = [
            (_text(rest[i]), int(rest[i + 1]), int(rest[i + 2])) for i in range(0, len(rest), 3)
        ]
        return Pumped(now, tpm, rpm, ipm, hint, outcomes)

    def _line(self, key: LimitKey) -> WaitLine:
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = WaitLine(
                key, self, max_poll_s=self.config.max_poll_s, fast_asks=self._fast_asks
            )
        return line

    # -- Limiter ---------------------------------------------------------------------------------
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
    ) -> Reservation:
        """Wait in the fleet queue until the buckets grant ``tokens``, one request and ``images``.

        Raises ``RequestTooLargeError`` at once when the request can never fit,
        ``CapacityWaitTimeoutError`` after ``timeout`` seconds.
        """
        if tokens <= 0:
            raise ValueError(f"tokens must be positive, got {tokens}")
        if images < 0:
            raise ValueError(f"images must be >= 0, got {images}")
        if priority not in ("interactive", "bulk"):
            raise ValueError(f"unknown priority {priority!r}")
        await self._register(key)
        waiter = Waiter(tokens, priority, max_output_tokens, images, tenant, timeout)
        return await self._line(key).acquire(waiter)

    def _wake(self, key: LimitKey) -> None:
        line = self._lines.get(key)
        if line is not None:
            line.wake()

    async def _finish(
        self, r: Reservation, mode: str, charge: int, headers: Mapping[str, str] | None
    ) -> None:
        if headers is not None and parse_ratelimit_headers(headers).empty:
            headers = self._headerless_once(r.key, headers)
        try:
            # A refusal's (429) `remaining` is current, not as old as a call: no tolerance.
            hdr = self._headers_args(headers, tolerance=0.0 if mode == "u" else None)
            await self._run("finish", r.key, r.id, mode, charge, *hdr)
        except StorageUnavailableError:
            log.warning("limiter: could not %s a call on %s", "settle" if mode == "s" else
                        "release", r.key.model)  # fmt: skip

    def _headerless_once(
        self, key: LimitKey, headers: Mapping[str, str]
    ) -> Mapping[str, str] | None:
        # Recorded once per process (ends the probe phase of a server without headers).
        if key in self._headerless:
            return None
        self._headerless.add(key)
        return headers

    async def settle(
        self,
        reservation: Reservation,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Correct the grant to what the API counted at admission; ``headers`` (the answer's)
        also resync the buckets in the same round trip (instead of ``observe_headers``).

        With ``max_output_tokens`` known: ``prompt_tokens + max_output_tokens`` (the API's own
        count; the difference to our prompt estimate is refunded or charged). Without it the split
        of the reservation is unknown, so the charge is ``max(reserved, prompt + completion)``.
        Redis errors are logged, not raised: the call succeeded.
        """
        if reservation.max_output_tokens is not None:
            charged = prompt_tokens + reservation.max_output_tokens
        else:
            charged = max(reservation.tokens, prompt_tokens + completion_tokens)
        await self._finish(reservation, "s", max(0, charged), headers)
        if charged < reservation.tokens:
            self._wake(reservation.key)

    async def release(
        self, reservation: Reservation, *, counted: bool, headers: Mapping[str, str] | None = None
    ) -> None:
        """After a failed call: ``counted=False`` gives tokens, request and images back (the API
        did not admit it: 429, connection refused); ``counted=True`` keeps the charge. A 429's
        ``headers`` resync the buckets down to the API's ``remaining`` (no tolerance)."""
        await self._finish(reservation, "c" if counted else "u", 0, headers)
        if not counted:
            self._wake(reservation.key)

    async def observe_headers(self, key: LimitKey, headers: Mapping[str, str]) -> None:
        """Discover limits and resync the buckets (down only) from ``x-ratelimit-*`` headers."""
        if parse_ratelimit_headers(headers).empty and self._headerless_once(key, headers) is None:
            return
        try:
            await self._run("observe", key, *self._headers_args(headers)[1:])
        except StorageUnavailableError:
            log.warning("limiter: could not record rate-limit headers for %s", key.model)

    async def cooldown(self, key: LimitKey, seconds: float) -> None:
        """After a 429: pause every process on this limit for ``seconds`` (the longest pause
        wins); the buckets give up the refill of the extension (the API had less than we held)."""
        if seconds > 0:
            await self._run("cooldown", key, max(1, round(seconds * 1000)))

    async def snapshot(self, key: LimitKey) -> LimitSnapshot:
        """The buckets and the queue of one limit now (``imgq limits``, metrics)."""
        alive_ms = round(self.config.waiter_alive_s * 1000)
        out = await self._run("snapshot", key, alive_ms)
        _now, tpm, rpm, ipm, ts, rs, _is, td, rd, idf, res, n, cd, resyncs, qi, qb, procs = out
        tpm, rpm, ipm = int(tpm), int(rpm), int(ipm)
        return LimitSnapshot(
            key=key, tpm=tpm, rpm=rpm, tpm_source=_text(ts), rpm_source=_text(rs),
            tokens_level=tpm - float(td), requests_level=rpm - float(rd),
            tokens_reserved=int(res), in_flight=int(n), cooldown_s=int(cd) / 1000.0,
            resyncs=int(resyncs), waiting_interactive=int(qi), waiting_bulk=int(qb),
            processes=int(procs), ipm=ipm, images_level=ipm - float(idf),
        )  # fmt: skip

    async def status(self) -> list[LimitSnapshot]:
        """A snapshot of every limit in use (levels, refill, waiters): for ``imgq limits`` and
        metrics exporters."""
        return [await self.snapshot(k) for k in await self.known_keys()]

    async def known_keys(self) -> list[LimitKey]:
        """Every limit a process used within the registry's TTL (at most ``REGISTRY_MAX``)."""
        try:
            members = await self.redis.zrange(registry_key(self.config.prefix), 0, -1)
        except RedisError as exc:
            raise _unavailable(exc) from exc
        out = []
        for m in members:
            account, _, model = _text(m).partition(" ")
            try:
                out.append(LimitKey(model=model, account=account))
            except ValueError:
                continue
        return sorted(out, key=lambda k: (k.model, k.account))

    async def aclose(self) -> None:
        """Stop the pumps (waiters get ``CapacityWaitTimeoutError``)."""
        for line in self._lines.values():
            line.fail_all(CapacityWaitTimeoutError("limiter closed"))


def _tenant(tenant: str | None) -> str:
    """Tenant names as stored in Redis: bounded (long ones hashed)."""
    t = tenant or ""
    return t if len(t) <= 64 else "~" + hashlib.sha256(t.encode()).hexdigest()[:24]


def _unavailable(exc: Exception) -> StorageUnavailableError:
    return StorageUnavailableError(f"limiter: Redis unavailable ({type(exc).__name__})")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
