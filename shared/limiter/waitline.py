"""One limit's local waiting line in one process, and the pump that serves it.

Callers that find nobody waiting ask Redis directly (at most ``fast_asks`` at once). Everyone else
joins a ``FairLine`` (interactive first, bulk never starved); one pump task asks Redis for the
head only. A denied ask says exactly when enough of the window expires; the pump sleeps that long
(at most ``max_poll_s``, so refunds made by other processes are seen) or until ``wake()`` (a
local refund). So waiting costs neither the event loop nor a Redis connection per waiter.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

from shared.errors import CapacityWaitTimeoutError, RequestTooLargeError, StorageUnavailableError
from shared.limiter.base import Priority, Reservation
from shared.limiter.fair import FairLine
from shared.limiter.keys import LimitKey


@dataclass(frozen=True)
class Ask:
    """One answer of the ACQUIRE script."""

    status: int  # 1 granted, 0 wait, -1 too large
    value: int  # wait ms, or the TPM limit when too large
    now_ms: int
    tpm: int
    rpm: int


class Grants(Protocol):
    async def ask(self, key: LimitKey, tokens: int, rid: str) -> Ask: ...

    async def give_back(self, key: LimitKey, rid: str) -> None: ...


@dataclass(eq=False)
class _Waiter:
    tokens: int
    priority: Priority
    max_output_tokens: int | None
    started: float
    future: asyncio.Future[Reservation]


def too_large(key: LimitKey, tokens: int, tpm: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"request needs {tokens} tokens but {key.model} allows {tpm} tokens per minute: "
        "it can never be admitted (lower max output tokens, image detail or size)"
    )


class WaitLine:
    def __init__(
        self, key: LimitKey, grants: Grants, *, burst: int, max_poll_s: float, fast_asks: int
    ) -> None:
        self.key = key
        self._grants = grants
        self._line: FairLine[_Waiter] = FairLine(burst=burst)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._max_poll_s = max_poll_s
        self._fast_asks = fast_asks
        self._fast = 0  # direct asks in flight
        self.tpm: int | None = None  # from the last answer: too-large requests skip the line

    def __len__(self) -> int:
        return len(self._line)

    async def _ask(self, tokens: int, rid: str) -> Ask:
        ask = await self._grants.ask(self.key, tokens, rid)
        self.tpm = ask.tpm
        return ask

    async def acquire(
        self,
        tokens: int,
        priority: Priority,
        timeout: float | None,
        max_output_tokens: int | None,
    ) -> Reservation:
        key, started = self.key, time.monotonic()
        if self.tpm is not None and tokens > self.tpm:
            raise too_large(key, tokens, self.tpm)
        if not len(self._line) and self._fast < self._fast_asks:  # nobody waits: ask at once
            rid = uuid.uuid4().hex
            self._fast += 1
            try:
                ask = await self._ask(tokens, rid)
            finally:
                self._fast -= 1
            if ask.status == 1:
                return Reservation(key, tokens, rid, priority, max_output_tokens, ask.now_ms, 0.0)
            if ask.status == -1:
                raise too_large(key, tokens, ask.value)
        fut: asyncio.Future[Reservation] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(tokens, priority, max_output_tokens, started, fut)
        self._line.push(priority, waiter)
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name=f"limiter-pump-{key.model}")
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            self._line.remove(waiter)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                return fut.result()  # granted in the same instant: use it
            fut.cancel()
            raise CapacityWaitTimeoutError(
                f"no capacity for {tokens} tokens on {key.model} within {timeout:.1f}s"
            ) from None
        except asyncio.CancelledError:
            self._line.remove(waiter)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                await asyncio.shield(self._grants.give_back(key, fut.result().id))
            fut.cancel()
            raise

    def wake(self) -> None:
        self._wake.set()

    def fail_all(self, exc: Exception) -> None:
        if self._task is not None:
            self._task.cancel()
        while len(self._line):
            w = self._line.pop()
            if not w.future.done():
                w.future.set_exception(exc)

    async def _pump(self) -> None:
        """Serve the head until the line is empty (one Redis call in flight at a time)."""
        line = self._line
        try:
            while len(line):
                w = line.peek()
                assert w is not None
                if w.future.done():
                    line.remove(w)
                    continue
                rid = uuid.uuid4().hex
                try:
                    ask = await self._ask(w.tokens, rid)
                except StorageUnavailableError as exc:
                    self._task = None
                    self.fail_all(exc)
                    return
                if ask.status == 1:
                    _ = line.pop() if line.peek() is w else line.remove(w)
                    res = Reservation(self.key, w.tokens, rid, w.priority, w.max_output_tokens,
                                      ask.now_ms, time.monotonic() - w.started)  # fmt: skip
                    if w.future.done():  # gave up meanwhile: give the grant back
                        await self._grants.give_back(self.key, rid)
                    else:
                        w.future.set_result(res)
                    continue
                if ask.status == -1:
                    line.remove(w)
                    if not w.future.done():
                        w.future.set_exception(too_large(self.key, w.tokens, ask.value))
                    continue
                self._wake.clear()
                # A little jitter so that processes woken by the same expiry do not all collide.
                sleep = min(ask.value / 1000.0, self._max_poll_s) + random.uniform(0, 0.01)
                try:
                    async with asyncio.timeout(sleep):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            self._task = None
