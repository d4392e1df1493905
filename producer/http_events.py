"""A job's server-sent events (``GET /v1/jobs/{job_id}/events``) as the HTTP clients yield them.

``SseParser`` reads the text/event-stream format (WHATWG HTML, "server-sent events"): a field
per line, an event ended by a blank line, ``data`` lines joined with newlines, lines starting
with ``:`` (the API's keep-alive ``: ping``) ignored, and LF, CRLF or CR line ends.

>>> p = SseParser()
>>> p.feed(b': ping\\n\\nevent: delta\\r\\ndata: {"a":\\r\\ndata:1}\\r')
[]
>>> p.feed(b"\\n\\r\\nevent: other\\n")
[('delta', '{"a":\\n1}')]

``EventOrder`` turns what one or more connections bring into what the caller sees: the same
status once (a reconnect opens with the status as it stands), and for each attempt deltas whose
texts join up from offset 0. Pub/sub keeps no history, so a reconnect can miss deltas; the text
after such a gap is held back and given, whole, from the final document.

>>> order = EventOrder()
>>> order.accept("status", '{"job_id": "j", "status": "running"}')[0].job.status
'running'
>>> order.accept("delta", '{"attempt": 1, "offset": 0, "text": "Hel"}')
[DeltaEvent(attempt=1, offset=0, text='Hel')]
>>> order.accept("status", '{"job_id": "j", "status": "running"}')  # reconnected: same status
[]
>>> order.accept("delta", '{"attempt": 1, "offset": 6, "text": "world"}')  # 3 chars missed
[]
>>> final = '{"job_id": "j", "status": "succeeded", "attempts": 1, "output_text": "Hello world"}'
>>> [type(e).__name__ for e in order.accept("status", final)], order.done
(['DeltaEvent', 'StatusEvent'], True)
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

from shared.jobs import Result

_LINE_END = re.compile(r"\r\n|\r|\n")
# One event is at most a job's document: its answer (bounded by max_output_tokens), capped
# metadata and sources. A stream that sends more without ending an event is not the API's.
MAX_EVENT_CHARS = 16 * 2**20


class EventStreamError(ValueError):
    """The stream broke the format's bounds (an event over ``MAX_EVENT_CHARS``)."""


class SseParser:
    """Bytes in, ``(event type, data)`` out, per complete event (``EventStreamError`` past
    ``max_event_chars`` in one event: memory stays bounded whatever the server sends). Events
    completed before the oversized one in the same chunk are returned first; the error is
    raised by the next ``feed``."""

    def __init__(self, max_event_chars: int | None = None) -> None:
        self._max = max_event_chars or MAX_EVENT_CHARS
        self._size = 0  # characters of the event being read (its lines so far)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._broken: EventStreamError | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        if self._broken is not None:
            raise self._broken
        out: list[tuple[str, str]] = []
        try:
            self._parse(chunk, out)
        except EventStreamError as exc:
            if not out:
                raise
            self._broken = exc  # give the caller the complete events first
            self._pending, self._data = "", []
        return out

    def _parse(self, chunk: bytes, out: list[tuple[str, str]]) -> None:
        self._pending += self._decoder.decode(chunk)
        if not self._started and self._pending:
            self._started = True
            self._pending = self._pending.removeprefix("\ufeff")  # the format allows one BOM
        start = 0
        for m in _LINE_END.finditer(self._pending):
            if m.group() == "\r" and m.end() == len(self._pending):
                break  # maybe the first half of a CRLF split across chunks: wait for more
            if (event := self._line(self._pending[start : m.start()])) is not None:
                out.append(event)
            start = m.end()
        self._pending = self._pending[start:]
        if self._size + len(self._pending) > self._max:
            raise EventStreamError(f"an event of more than {self._max} characters")

    def _line(self, line: str) -> tuple[str, str] | None:
        if not line:  # a blank line ends the event; one without data is no event
            event, data, self._event, self._data = self._event, self._data, "", []
            self._size = 0
            return (event or "message", "\n".join(data)) if data else None
        if line.startswith(":"):
            return None  # a comment: keep-alive
        self._size += len(line)
        if self._size > self._max:
            raise EventStreamError(f"an event of more than {self._max} characters")
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # id, retry and unknown fields: nothing this API uses


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """The job's document at a status change; ``job.done``: the last event of the stream."""

    job: Result


@dataclass(frozen=True, slots=True)
class DeltaEvent:
    """``text`` starts at character ``offset`` of attempt ``attempt``'s output text. A retried
    call starts again at offset 0 with the next attempt: drop the text of earlier attempts."""

    attempt: int
    offset: int
    text: str


JobEvent = StatusEvent | DeltaEvent


def _delta(data: str) -> DeltaEvent:
    doc: Any = json.loads(data)
    fields = [doc.get(k) for k in ("attempt", "offset", "text")] if isinstance(doc, dict) else []
    match fields:
        case [int(attempt), int(offset), str(text)]:
            return DeltaEvent(attempt, offset, text)
    raise ValueError(f"not a delta: {data[:200]!r}")


class EventOrder:
    """What the caller is given of the events of one job, over any number of connections."""

    def __init__(self) -> None:
        self.done = False
        self._status: str | None = None
        self._attempt = 0
        self._end = 0  # the caller has the text of attempt ``_attempt`` up to here
        self._gap = False  # some text of this attempt was missed: the rest waits for the end
        self._streamed = False

    def accept(self, event: str, data: str) -> list[JobEvent]:
        if event == "status":
            return self._on_status(Result.model_validate_json(data))
        if event == "delta":
            return self._on_delta(_delta(data))
        return []  # an event type newer than this client: not for it

    def _on_delta(self, d: DeltaEvent) -> list[JobEvent]:
        self._streamed = True
        if d.attempt > self._attempt:
            self._attempt, self._end, self._gap = d.attempt, 0, False
        if d.attempt < self._attempt or self._gap:
            return []
        if d.offset > self._end:
            self._gap = True
            return []
        if d.offset + len(d.text) <= self._end:
            return []  # already given
        text = d.text[self._end - d.offset :]
        out = DeltaEvent(d.attempt, self._end, text)
        self._end += len(text)
        return [out]

    def _on_status(self, job: Result) -> list[JobEvent]:
        if not job.done and job.status == self._status:
            return []  # a reconnect's opening status, already given
        self._status = job.status
        out: list[JobEvent] = []
        if job.done:
            self.done = True
            if (tail := self._tail(job)) is not None:
                out.append(tail)
        out.append(StatusEvent(job))
        return out

    def _tail(self, job: Result) -> DeltaEvent | None:
        """The final attempt's text the deltas did not bring (missed, or after a gap)."""
        text = job.output_text
        if not self._streamed or job.status != "succeeded" or not text:
            return None
        if job.attempts > self._attempt:  # none of the final attempt's deltas came
            return DeltaEvent(job.attempts, 0, text)
        if job.attempts == self._attempt and self._end < len(text):
            return DeltaEvent(job.attempts, self._end, text[self._end :])
        return None


__all__ = ["DeltaEvent", "EventOrder", "JobEvent", "SseParser", "StatusEvent"]
