"""`HttpClient.events` / `AsyncHttpClient.events`: a job's server-sent events as typed events.

Against the live stack (real API, Redis, workers, simulator): the streamed text and the
status changes, the typed errors. Against a scripted peer: what the live API only does after
MAX_STREAM_SECONDS (ending a stream before the job is final) and the wire format's corners.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from imgq import ApiError, AsyncHttpClient, DeltaEvent, HttpClient, StatusEvent
from producer import http_client, http_events
from producer.http_events import EventStreamError, JobEvent, SseParser
from tests.api.conftest import ApiStack
from tests.conftest import ROOT, start_simulator, stop_simulator
from tests.pipeline.conftest import make_image
from tests.procs import stop_processes, worker_env


def test_events_follow_a_streaming_job_and_a_plain_one(api_stack: ApiStack) -> None:
    images = [make_image(160 + i) for i in range(4)]  # a few lines of answer each
    with HttpClient(api_stack.url, api_key=api_stack.key("follower")) as c:
        c.submit(images, "Describe these.", job_id="ev-s", stream=True, priority="bulk",
                 dedup=False)  # fmt: skip
        c.submit(images, "Describe these.", job_id="ev-p", priority="bulk", dedup=False)
        # Bulk: queued until a bulk worker starts, after each stream has its first event (the
        # API subscribes before sending it, so every delta from then on reaches the client).
        streams = {job_id: c.events(job_id) for job_id in ("ev-s", "ev-p")}
        seen: dict[str, list[JobEvent]] = {job_id: [next(it)] for job_id, it in streams.items()}
        sim = start_simulator("--latency-ms", "5", "--jitter-ms", "0", "--tpm", "10000000",
                              "--rpm", "100000", "--stream-chunk-ms", "15")  # fmt: skip
        log = open(api_stack.tmp / "events-worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "imgq.cli", "worker", "-c", "2", "-Q", "bulk",
             "-n", f"api-events-{os.getpid()}@%h"],
            cwd=ROOT, env=worker_env(api_stack.redis_url, sim), stdout=log, stderr=log,
        )  # fmt: skip
        try:
            for job_id, it in streams.items():
                seen[job_id].extend(it)  # the iterator ends after the final status
        finally:
            stop_processes(worker)
            log.close()
            stop_simulator(sim)
        final = {job_id: c.get(job_id) for job_id in streams}

    for job_id, events in seen.items():
        first, last = events[0], events[-1]
        assert isinstance(first, StatusEvent) and first.job.status == "queued", first
        assert isinstance(last, StatusEvent) and last.job == final[job_id], (last, final)
        assert last.job.status == "succeeded" and last.job.output_text
        statuses = [e.job.status for e in events if isinstance(e, StatusEvent)]
        assert statuses == [s for s, _ in itertools.groupby(statuses)]  # each change once
    deltas = [e for e in seen["ev-s"] if isinstance(e, DeltaEvent)]
    assert len(deltas) >= 2, deltas  # streamed in pieces, not one block at the end
    assert "".join(d.text for d in deltas) == final["ev-s"].output_text  # type: ignore[union-attr]
    assert deltas[0].offset == 0 and {d.attempt for d in deltas} == {1}
    assert all(a.offset + len(a.text) == b.offset for a, b in itertools.pairwise(deltas))
    assert all(isinstance(e, StatusEvent) for e in seen["ev-p"])  # not streamed: no deltas


def test_events_raise_the_typed_errors(api_stack: ApiStack) -> None:
    with HttpClient(api_stack.url, api_key=api_stack.key("follower")) as c:
        c.submit([make_image(170)], "Later.", job_id="ev-mine", priority="bulk")
    with HttpClient(api_stack.url, api_key=api_stack.key("ev-intruder")) as other:
        with pytest.raises(ApiError) as info:
            next(other.events("ev-mine"))  # another tenant's job: as if it did not exist
        assert (info.value.status, info.value.code) == (404, "not_found")
        assert info.value.request_id
    with HttpClient(api_stack.url, api_key="imgq_wrong") as bad:
        with pytest.raises(ApiError) as info:
            next(bad.events("ev-mine"))
        assert (info.value.status, info.value.code) == (401, "unauthorized")


def _sse(event: str, *data_lines: str, end: str = "\n") -> bytes:
    lines = [f"event: {event}", *(f"data: {d}" for d in data_lines)]
    return (end.join(lines) + end + end).encode()


# What a scripted API sends on each connection to job "j": three streams, the first two ended
# (as the API does after MAX_STREAM_SECONDS) before the job is final.
SCRIPT = [
    [
        b": ping\n\n",
        # one document over two data lines (joined with a newline), the line ends CRLF
        _sse("status", '{"job_id": "j",', ' "status": "running"}', end="\r\n"),
        _sse("delta", '{"attempt": 1, "offset": 0, "text": "Hel"}'),
    ],
    [
        _sse("status", '{"job_id": "j", "status": "running"}'),  # as it stands: not repeated
        b"retry: 10\nid: 7\n: ping\n\n",
        _sse("delta", '{"attempt": 1, "offset": 3, "text": "lo"}'),
        _sse("future", '{"ignored": true}'),
    ],
    [
        _sse("status", '{"job_id": "j", "status": "running"}'),
        _sse("delta", '{"attempt": 1, "offset": 8, "text": "rld"}'),  # " wo" was missed
        _sse(
            "status",
            '{"job_id": "j", "status": "succeeded", "attempts": 1, "output_text": "Hello world"}',
        ),
    ],
]


@contextlib.asynccontextmanager
async def _scripted(script: list[list[bytes]], opened: list[int]) -> AsyncIterator[str]:
    """A server answering each connection with the next stream of ``script``, then 404."""

    async def events(request: web.Request) -> web.StreamResponse:
        n = len(opened)
        opened.append(n)
        if n >= len(script):
            return web.json_response(
                {"error": {"code": "not_found", "message": "no job", "request_id": "r"}},
                status=404,
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for part in script[n]:
            for i in range(0, len(part), 7):  # in small pieces: events span chunks
                await resp.write(part[i : i + 7])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/jobs/{job_id}/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_stream_ended_early_is_reconnected_and_its_text_completed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_client, "RECONNECT_PAUSE", 0.0)
    opened: list[int] = []
    async with _scripted(SCRIPT, opened) as url, AsyncHttpClient(url, api_key="k") as c:
        got = [e async for e in c.events("j")]
    assert len(opened) == 3
    assert [type(e).__name__ for e in got] == ["StatusEvent"] + ["DeltaEvent"] * 3 + ["StatusEvent"]
    assert got[1:4] == [DeltaEvent(1, 0, "Hel"), DeltaEvent(1, 3, "lo"), DeltaEvent(1, 5, " world")]
    final = got[-1]
    assert isinstance(final, StatusEvent) and final.job.status == "succeeded"
    assert "".join(e.text for e in got if isinstance(e, DeltaEvent)) == final.job.output_text


async def test_a_job_gone_between_streams_raises_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_client, "RECONNECT_PAUSE", 0.0)
    got: list[JobEvent] = []
    async with _scripted(SCRIPT[:1], []) as url, AsyncHttpClient(url, api_key="k") as c:
        with pytest.raises(ApiError) as info:
            async for event in c.events("j"):  # deleted while its stream was reconnected
                got.append(event)
    assert info.value.status == 404 and info.value.code == "not_found"
    assert got == [StatusEvent(got[0].job), DeltaEvent(1, 0, "Hel")]  # type: ignore[union-attr]


def test_the_parser_bounds_one_event_whatever_the_server_sends() -> None:
    parser = SseParser(max_event_chars=100)
    assert parser.feed(b"data: " + b"x" * 80 + b"\n\n") == [("message", "x" * 80)]
    with pytest.raises(EventStreamError):  # many lines, one event
        for _ in range(10):
            parser.feed(b"data: " + b"y" * 20 + b"\n")
    with pytest.raises(EventStreamError):  # one line that never ends
        SseParser(max_event_chars=100).feed(b"data: " + b"z" * 200)
    parser = SseParser(max_event_chars=100)  # an event, then too much, in one chunk
    assert parser.feed(b"data: ok\n\ndata: " + b"w" * 200) == [("message", "ok")]
    with pytest.raises(EventStreamError):  # held back until the event before it is given
        parser.feed(b"")


async def test_an_endless_event_fails_the_stream_with_a_typed_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_events, "MAX_EVENT_CHARS", 1000)
    # Written in 7-byte pieces that a loaded machine may deliver as one chunk: the status
    # completed in that chunk still reaches the caller before the error.
    endless = [[_sse("status", '{"job_id": "j", "status": "running"}'), b"data: " + b"a" * 5000]]
    async with _scripted(endless, []) as url, AsyncHttpClient(url, api_key="k") as c:
        got: list[JobEvent] = []
        with pytest.raises(ApiError) as info:
            async for event in c.events("j"):
                got.append(event)
    assert info.value.code == "bad_event_stream"
    assert len(got) == 1 and isinstance(got[0], StatusEvent)
