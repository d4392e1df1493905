"""This process's side of one limit's fleet-wide queue: its waiters, and the pump that serves them.

The queue itself is in Redis (bucket.lua): every waiter of every process, interactive first, then
by weighted-fair arrival. A caller that finds no local waiter ahead of it joins the queue and is
granted in the same script call when nobody in the fleet is ahead and the buckets allow (at most
``fast_asks`` such calls at once). Everyone else is sent by the pump, in one call for all new
waiters. Each pump call also grants from the head for the whole fleet, collects what other
processes granted to this one, and returns how long until the head fits; the pump sleeps that
long (at most ``max_poll_s``: grants made by others, refunds elsewhere, liveness) or until a local
refund or a new waiter wakes it. Waiting costs neither the event loop nor a connection per waiter.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import CapacityWaitTimeoutError, RequestTooLargeError, StorageUnavailableError
from shared.limiter.base import Priority, Reservation
from shared.limiter.keys import LimitKey

GRANTED, TOO_MANY_TOKENS, DROPPED, TOO_MANY_IMAGES = 1, -1, -2, -3


@dataclass(frozen=True)
class Pumped:
    """One answer of the pump script."""

    now_ms: int
    tpm: int
    rpm: int
    ipm: int
    hint_ms: int  # until the head of the fleet queue fits; -1: nobody waits; 0: more fits now
    outcomes: list[tuple[str, int, int]]  # (waiter id, code, value) for this process's waiters


@dataclass(eq=False)
class Waiter:
    tokens: int
    priority: Priority
    max_output_tokens: int | None
    images: int
    tenant: str | None
    timeout: float | None
    started: float = field(default_factory=time.monotonic)
    id: str = field(default_factory=lambda: _waiter_id())
    future: asyncio.Future[Reservation] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Grants(Protocol):
    async def pump(self, key: LimitKey, new: Sequence[Waiter], cancel: Sequence[str]) -> Pumped: ...


def too_large(key: LimitKey, tokens: int, tpm: int, what: str = "tokens") -> RequestTooLargeError:
    return RequestTooLargeError(
        f"request needs {tokens} {what} but {key.model} allows {tpm} {what} per minute: "
        "it can never be admitted (lower max output tokens, image detail or size, or n)"
    )


class WaitLine:
    def __init__(self, key: LimitKey, grants: Grants, *, max_poll_s: float, fast_asks: int) -> None:
        self.key = key
        self._grants = grants
        self._waiting: dict[str, Waiter] = {}
        self._new: list[Waiter] = []  # not yet in the fleet queue
        self._cancel: list[str] = []  # ids to take out of the queue, or grants to give back
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._max_poll_s = max_poll_s
        self._fast_asks = fast_asks
        self._fast = 0  # direct calls in flight
        self._direct: set[str] = set()  # their waiters
        self.tpm: int | None = None  # from the last answer: too-large requests fail at once
        self.ipm: int | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    async def acquire(self, w: Waiter) -> Reservation:
        if self.tpm is not None and w.tokens > self.tpm:
            raise too_large(self.key, w.tokens, self.tpm)
        if self.ipm and w.images > self.ipm:
            raise too_large(self.key, w.images, self.ipm, "images")
        direct = not self._waiting and self._fast < self._fast_asks
        self._waiting[w.id] = w
        try:
            if direct:
                self._fast += 1
                self._direct.add(w.id)
                try:
                    self._apply(await self._grants.pump(self.key, [w], []))
                finally:
                    self._fast -= 1
                    self._direct.discard(w.id)
            else:
                self._new.append(w)
            if not w.future.done():
                self._start()
            async with asyncio.timeout(w.timeout):
                return await asyncio.shield(w.future)
        except TimeoutError:
            if _granted(w.future):
                return w.future.result()  # granted in the same instant: use it
            self._forget(w, give_back=False)
            raise CapacityWaitTimeoutError(
                f"no capacity for {w.tokens} tokens on {self.key.model} within {w.timeout:.1f}s"
            ) from None
        except BaseException:
            failed = w.future.done() and not w.future.cancelled() and w.future.exception()
            if not failed:  # (a failed waiter, e.g. too large, is out of the queue already)
                self._forget(w, give_back=_granted(w.future))
            raise

    def _forget(self, w: Waiter, *, give_back: bool) -> None:
        self._waiting.pop(w.id, None)
        if not w.future.done():
            w.future.cancel()
        if w in self._new and not give_back:
            self._new.remove(w)  # never sent
            return
        self._cancel.append(w.id)  # out of the fleet queue, or its grant back to the bucket
        self._start()

    def _start(self) -> None:
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name=f"limiter-pump-{self.key.model}")

    def wake(self) -> None:
        if self._waiting:
            self._start()

    def fail_all(self, exc: Exception) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for w in list(self._waiting.values()):
            if not w.future.done():
                w.future.set_exception(exc)
        self._waiting.clear()
        self._new.clear()

    def _apply(self, p: Pumped) -> None:
        self.tpm, self.ipm = p.tpm, p.ipm or None
        for wid, code, value in p.outcomes:
            w = self._waiting.get(wid)
            if w is None or w.future.done():
                if code == GRANTED:
                    self._cancel.append(wid)  # its caller is gone: give the grant back
                continue
            if code == DROPPED:  # we looked dead to the fleet (a long pause): queue again
                self._new.append(w)
                continue
            del self._waiting[wid]
            if code == GRANTED:
                w.future.set_result(
                    Reservation(self.key, w.tokens, wid, w.priority, w.max_output_tokens, value,
                                time.monotonic() - w.started, w.images, w.tenant)
                )  # fmt: skip
            elif code == TOO_MANY_IMAGES:
                w.future.set_exception(too_large(self.key, w.images, value, "images"))
            else:
                w.future.set_exception(too_large(self.key, w.tokens, value))

    async def _pump(self) -> None:
        """Call the script while anything waits here; sleep until the head could fit."""
        me = asyncio.current_task()
        try:
            while self._waiting or self._cancel or self._new:
                new = [w for w in self._new if w.id in self._waiting]
                cancel = self._cancel
                self._new, self._cancel = [], []
                self._wake.clear()
                try:
                    p = await self._grants.pump(self.key, new, cancel)
                except StorageUnavailableError as exc:
                    self._task = None
                    self.fail_all(exc)
                    return
                self._apply(p)
                if p.hint_ms < 0:
                    # Nobody waits in the fleet queue, yet some of ours are not granted: the queue
                    # was lost (a Redis restart, a flush). Queue them again.
                    queued = {x.id for x in self._new} | self._direct
                    self._new += [x for x in self._waiting.values() if x.id not in queued]
                if self._new or self._cancel or not self._waiting:
                    continue
                hint = p.hint_ms / 1000.0 if p.hint_ms >= 0 else self._max_poll_s
                # A little jitter: processes woken by the same refill do not all call at once.
                sleep = min(hint, self._max_poll_s) + random.uniform(0.0005, 0.004)
                if self._wake.is_set():
                    continue
                try:
                    async with asyncio.timeout(sleep):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            if self._task is me:
                self._task = None


def _waiter_id() -> str:
    """Starts with the arrival time (16 hex digits of ns): equal fair-share tags go by arrival."""
    return f"{time.time_ns():016x}{uuid.uuid4().hex[:12]}"


def _granted(fut: asyncio.Future[Reservation]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None
