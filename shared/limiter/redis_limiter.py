"""``RedisLimiter``: the fleet-wide TPM/RPM limiter (sliding window log in Redis, see scripts.py).

Waiting: each process keeps one local line per limit (interactive first, bulk never starved) and
one pump task that asks Redis for the head of the line only. A denied ask returns the exact time
until enough of the window expires; the pump sleeps that long (at most ``max_poll_s``, so refunds
made by other processes are noticed) or until a local refund wakes it. So waiting costs neither
the event loop nor a Redis connection per waiter.

>>> # doctest: +SKIP
>>> limiter = RedisLimiter(redis.asyncio.Redis.from_url(url), LimitsConfig())
>>> r = await limiter.acquire(LimitKey("gpt-4o", fp), 1200, max_output_tokens=300)
>>> ... call the API ...
>>> await limiter.settle(r, prompt_tokens=880, completion_tokens=120)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.errors import CapacityWaitTimeoutError, RequestTooLargeError, StorageUnavailableError
from shared.limiter import scripts
from shared.limiter.base import LimitSnapshot, Priority, Reservation
from shared.limiter.config import LimitsConfig
from shared.limiter.fair import FairLine
from shared.limiter.headers import parse_ratelimit_headers
from shared.limiter.keys import LimitKey, redis_keys, registry_key

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Waiter:
    tokens: int
    priority: Priority
    max_output_tokens: int | None
    started: float
    future: asyncio.Future[Reservation]


@dataclass(eq=False)
class _Line:
    line: FairLine[_Waiter]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    tpm: int | None = None  # the TPM limit of the last answer: too-large requests skip the line
    fast: int = 0  # direct asks in flight (callers that found the line empty)


@dataclass(frozen=True)
class _Ask:
    status: int  # 1 granted, 0 wait, -1 too large
    value: int  # wait ms, or the TPM limit when too large
    now_ms: int
    tpm: int
    rpm: int


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
        self._lines: dict[LimitKey, _Line] = {}
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
        argv = [now, self.config.window_ms, self._ttl_ms, *args]
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

    async def _ask(self, key: LimitKey, tokens: int, rid: str) -> _Ask:
        out = await self._run("ACQUIRE", key, tokens, *self._limit_args(key), rid, self._scan_cap)
        ask = _Ask(*(int(x) for x in out))
        line = self._lines.get(key)
        if line is not None:
            line.tpm = ask.tpm
        return ask

    # -- Limiter ---------------------------------------------------------------------------------
    async def acquire(
        self,
        key: LimitKey,
        tokens: int,
        *,
        priority: Priority = "interactive",
        timeout: float | None = None,  # noqa: ASYNC109 (the Limiter API)
        max_output_tokens: int | None = None,
    ) -> Reservation:
        """Wait until both the TPM and the RPM window grant ``tokens`` and one request."""
        if tokens <= 0:
            raise ValueError(f"tokens must be positive, got {tokens}")
        if priority not in ("interactive", "bulk"):
            raise ValueError(f"unknown priority {priority!r}")
        started = time.monotonic()
        await self._register_safe(key)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line(FairLine(burst=self.config.interactive_burst))
        if line.tpm is not None and tokens > line.tpm:
            raise _too_large(key, tokens, line.tpm)
        if not len(line.line) and line.fast < self._fast_asks:  # nobody waits: ask at once
            rid = uuid.uuid4().hex
            line.fast += 1
            try:
                ask = await self._ask(key, tokens, rid)
            finally:
                line.fast -= 1
            if ask.status == 1:
                return Reservation(key, tokens, rid, priority, max_output_tokens, ask.now_ms, 0.0)
            if ask.status == -1:
                raise _too_large(key, tokens, ask.value)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(tokens, priority, max_output_tokens, started, loop.create_future())
        line.line.push(priority, waiter)
        if line.task is None:
            line.task = asyncio.create_task(self._pump(key, line), name=f"limiter-pump-{key.model}")
        line.wake.set()
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(waiter.future)
        except TimeoutError:
            line.line.remove(waiter)
            if waiter.future.done() and not waiter.future.cancelled():
                return waiter.future.result()  # granted in the same instant: use it
            waiter.future.cancel()
            raise CapacityWaitTimeoutError(
                f"no capacity for {tokens} tokens on {key.model} within {timeout:.1f}s"
            ) from None
        except asyncio.CancelledError:
            line.line.remove(waiter)
            f = waiter.future
            if f.done() and not f.cancelled() and f.exception() is None:
                await asyncio.shield(self.release(waiter.future.result(), counted=False))
            waiter.future.cancel()
            raise

    async def _register_safe(self, key: LimitKey) -> None:
        try:
            await self._register(key)
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def _pump(self, key: LimitKey, line: _Line) -> None:
        """Serve the line's head until the line is empty (one Redis call in flight at a time)."""
        try:
            while len(line.line):
                w = line.line.peek()
                assert w is not None
                if w.future.done():
                    line.line.remove(w)
                    continue
                rid = uuid.uuid4().hex
                try:
                    ask = await self._ask(key, w.tokens, rid)
                except StorageUnavailableError as exc:
                    self._fail_all(line, exc)
                    return
                if ask.status == 1:
                    if line.line.peek() is w:
                        line.line.pop()
                    else:
                        line.line.remove(w)
                    res = Reservation(
                        key,
                        w.tokens,
                        rid,
                        w.priority,
                        w.max_output_tokens,
                        ask.now_ms,
                        time.monotonic() - w.started,
                    )
                    if w.future.done():  # gave up meanwhile: give the grant back
                        await self._release_quiet(res)
                    else:
                        w.future.set_result(res)
                    continue
                if ask.status == -1:
                    line.line.remove(w)
                    if not w.future.done():
                        w.future.set_exception(_too_large(key, w.tokens, ask.value))
                    continue
                line.wake.clear()
                # A little jitter so that processes woken by the same expiry do not all collide.
                sleep = min(ask.value / 1000.0, self.config.max_poll_s) + random.uniform(0, 0.01)
                try:
                    async with asyncio.timeout(sleep):
                        await line.wake.wait()
                except TimeoutError:
                    pass
        finally:
            line.task = None

    @staticmethod
    def _fail_all(line: _Line, exc: Exception) -> None:
        while len(line.line):
            w = line.line.pop()
            if not w.future.done():
                w.future.set_exception(exc)

    def _wake(self, key: LimitKey) -> None:
        line = self._lines.get(key)
        if line is not None:
            line.wake.set()

    async def _release_quiet(self, res: Reservation) -> None:
        try:
            await self._run("RELEASE", res.key, res.id, 0)
        except StorageUnavailableError:
            log.warning("limiter: could not give back reservation on %s", res.key.model)

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
            await self._run("SETTLE", reservation.key, reservation.id, max(0, charged))
        except StorageUnavailableError:
            log.warning("limiter: settle failed on %s", reservation.key.model)
        if charged < reservation.tokens:
            self._wake(reservation.key)

    async def release(self, reservation: Reservation, *, counted: bool) -> None:
        """After a failed call: ``counted=False`` gives the tokens and the request back (the API
        did not admit it: 429, connection refused); ``counted=True`` keeps the charge."""
        try:
            await self._run("RELEASE", reservation.key, reservation.id, 1 if counted else 0)
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
            if line.task is not None:
                line.task.cancel()
            self._fail_all(line, CapacityWaitTimeoutError("limiter closed"))


def _unavailable(exc: Exception) -> StorageUnavailableError:
    return StorageUnavailableError(f"limiter: Redis unavailable ({type(exc).__name__})")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _too_large(key: LimitKey, tokens: int, tpm: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"request needs {tokens} tokens but {key.model} allows {tpm} tokens per minute: "
        "it can never be admitted (lower max output tokens, image detail or size)"
    )
