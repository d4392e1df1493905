"""The output text of a streaming job as it comes: one Redis pub/sub channel per job (issue 11).

A worker calling the model with ``stream=True`` hands each text fragment to a
``DeltaPublisher``, which coalesces them (at most one publish per ``FLUSH_SECONDS`` or per
``FLUSH_CHARS`` characters, so a fast stream does not cost one Redis command per token) and
publishes them on ``imgq:stream:<job_id>``; the API relays them as ``event: delta``
(``shared/stream_hub.py``). The job id is the stored, tenant-scoped one, so a tenant can only
ever be subscribed to its own jobs' channels.

Pub/sub is fire and forget: a subscriber sees the deltas published after it subscribed, never
earlier ones, and publishing is best effort (a failed publish is dropped: it never fails or
slows the job; the final document has the whole text). Each delta carries the attempt and the
offset of its text in that attempt's output, so a reader can tell when it missed some and when
a retried call started over (offset 0, next attempt).

>>> encode(Delta(2, 5, "hé llo")), decode(encode(Delta(2, 5, "hé llo")))
(b'2 5 h\\xc3\\xa9 llo', Delta(attempt=2, offset=5, text='hé llo'))
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis

log = logging.getLogger(__name__)
CHANNEL_PREFIX: Final = "imgq:stream:"
FLUSH_SECONDS: Final = 0.05
FLUSH_CHARS: Final = 1024
# The last publish of a finished stream is awaited (so it usually precedes the final status
# event), but never longer than this: a slow Redis must not hold a paid answer.
CLOSE_SECONDS: Final = 2.0
_IN_FLIGHT: set[asyncio.Task[None]] = set()  # publishes outliving their publisher (aborted)


def channel(job_id: str) -> str:
    """The pub/sub channel of ``job_id`` (the stored id: tenant-scoped for API jobs)."""
    return CHANNEL_PREFIX + job_id


@dataclass(frozen=True, slots=True)
class Delta:
    """``text`` starts at character ``offset`` of attempt ``attempt``'s output."""

    attempt: int
    offset: int
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "offset": self.offset, "text": self.text}


def encode(delta: Delta) -> bytes:
    # Plain text, not JSON: the worker encodes every delta, the API decodes only watched ones.
    return f"{delta.attempt} {delta.offset} {delta.text}".encode()


def decode(raw: bytes | str) -> Delta | None:
    """The delta in ``raw``, or None when it is not one (never raises)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    attempt, _, rest = text.partition(" ")
    offset, sep, body = rest.partition(" ")
    if not (sep and attempt.isdigit() and offset.isdigit()):
        return None
    return Delta(int(attempt), int(offset), body)


class DeltaPublisher:
    """Coalesce one attempt's text fragments into few, ordered, best-effort publishes.

    ``add`` is synchronous and never waits for Redis: at most one publish is in flight, and
    what arrives meanwhile is sent with the next one (so they stay in order). ``close`` sends
    the rest; ``abort`` drops it (the attempt failed: the next one starts at offset 0).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        job_id: str,
        attempt: int,
        *,
        interval: float = FLUSH_SECONDS,
        max_chars: int = FLUSH_CHARS,
    ) -> None:
        self._r = redis
        self._channel = channel(job_id)
        self._attempt = attempt
        self._interval = interval
        self._max_chars = max_chars
        self._loop = asyncio.get_running_loop()
        self._buf: list[str] = []
        self._buffered = 0  # characters in _buf
        self._offset = 0  # where _buf starts in the attempt's output
        self._last = -interval  # loop time of the last send
        self._sending: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.published = 0  # publishes that reached Redis
        self.failed = 0  # publishes dropped (Redis error or timeout)

    def add(self, text: str) -> None:
        if not text or self._closed:
            return
        self._buf.append(text)
        self._buffered += len(text)
        self._pump()

    def _pump(self) -> None:
        if not self._buf or self._sending is not None:
            return  # nothing to send, or the in-flight publish's completion calls back
        wait = self._last + self._interval - self._loop.time()
        if wait <= 0 or self._buffered >= self._max_chars:
            self._send()
        elif self._timer is None:
            self._timer = self._loop.call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        text = "".join(self._buf)
        payload = encode(Delta(self._attempt, self._offset, text))
        self._buf.clear()
        self._buffered = 0
        self._offset += len(text)
        self._last = self._loop.time()
        task = self._loop.create_task(self._publish(payload))
        _IN_FLIGHT.add(task)
        task.add_done_callback(self._sent)
        self._sending = task

    def _sent(self, task: asyncio.Task[None]) -> None:
        _IN_FLIGHT.discard(task)
        if self._sending is task:
            self._sending = None
            if not self._closed:
                self._pump()

    async def _publish(self, payload: bytes) -> None:
        try:
            await self._r.publish(self._channel, payload)
            self.published += 1
        except Exception as exc:  # best effort by design: nothing here may fail the job
            self.failed += 1
            log.debug("stream %s: a delta was dropped (%s)", self._channel, type(exc).__name__)

    async def close(self) -> None:
        """Send what is buffered and wait for it (at most ``CLOSE_SECONDS``); never raises."""
        self._closed = True
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                if self._sending is not None:
                    await asyncio.shield(self._sending)
                if self._buf:
                    self._send()
                    assert self._sending is not None
                    await asyncio.shield(self._sending)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        """Drop what is buffered; a publish in flight ends on its own (its text was real)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buf.clear()
        self._buffered = 0
