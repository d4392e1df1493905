"""Streaming jobs over real HTTP (issue 11): `GET /v1/jobs/{id}/events` relays the output text
as `delta` events between the status events, for chat and the Responses API.

The jobs are `bulk`, so they wait (the stack's worker takes `interactive` only) until each SSE
client has read its first status event — the API subscribes before writing it, so every delta
from then on reaches the client. Then a bulk worker starts, against a simulator that pauses
between chunks so the text really streams. The simulator's own token counts are the bill.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from typing import Any

from tests.api.conftest import Api, ApiStack, data_url, wait_done
from tests.conftest import ROOT, start_simulator, stop_simulator
from tests.pipeline.conftest import make_image
from tests.procs import stop_processes, worker_env

Events = list[tuple[str, dict[str, Any]]]


def _follow(c: Api, job_id: str, out: Events, connected: threading.Event) -> None:
    with c.get(f"/v1/jobs/{job_id}/events", stream=True, timeout=120) as resp:
        assert resp.status_code == 200, resp.text
        event = ""
        for line in resp.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
                connected.set()


def _deltas(events: Events) -> list[dict[str, Any]]:
    return [data for event, data in events if event == "delta"]


def test_streaming_jobs_send_their_text_as_deltas(api_stack: ApiStack) -> None:
    c = api_stack.client("streamer")
    images = [data_url(make_image(90 + i)) for i in range(4)]  # a few lines of answer each
    base = {"images": images, "prompt": "Describe these.", "priority": "bulk", "dedup": False}
    bodies = {
        "s-chat": {**base, "job_id": "s-chat", "stream": True},
        "s-resp": {**base, "job_id": "s-resp", "stream": True, "api": "responses"},
        "plain": {**base, "job_id": "plain"},  # the same call as s-chat, not streamed
    }
    for body in bodies.values():
        resp = c.post("/v1/jobs", json=body)
        assert resp.status_code == 202 and resp.json()["status"] == "queued", resp.text
    # Another tenant sees no stream of these jobs (nor that they exist).
    assert api_stack.client("stream-intruder").get("/v1/jobs/s-chat/events").status_code == 404

    seen: dict[str, Events] = {name: [] for name in bodies}
    threads = []
    for name in bodies:
        connected = threading.Event()
        t = threading.Thread(target=_follow, args=(c, name, seen[name], connected), daemon=True)
        t.start()
        assert connected.wait(30), f"no first event for {name}"
        threads.append(t)

    sim = start_simulator("--latency-ms", "5", "--jitter-ms", "0", "--tpm", "10000000",
                          "--rpm", "100000", "--stream-chunk-ms", "15")  # fmt: skip
    log = open(api_stack.tmp / "stream-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "imgq.cli", "worker", "-c", "4", "-Q", "bulk",
         "-n", f"api-stream-{os.getpid()}@%h"],
        cwd=ROOT, env=worker_env(api_stack.redis_url, sim), stdout=log, stderr=log,
    )  # fmt: skip
    try:
        final = {name: wait_done(c, name) for name in bodies}
        for t in threads:
            t.join(timeout=60)
        billed = sim.stats()
    finally:
        stop_processes(worker)
        log.close()
        stop_simulator(sim)

    for name, events in seen.items():
        doc = final[name]
        assert doc["status"] == "succeeded", doc
        assert events[0][0] == "status" and events[-1] == ("status", doc), name
    for name in ("s-chat", "s-resp"):
        deltas = _deltas(seen[name])
        text = final[name]["output_text"]
        assert len(deltas) >= 2, deltas  # streamed in pieces, not one block at the end
        assert "".join(d["text"] for d in deltas) == text
        assert deltas[0]["offset"] == 0 and all(d["attempt"] == 1 for d in deltas)
        assert all(
            a["offset"] + len(a["text"]) == b["offset"] for a, b in itertools.pairwise(deltas)
        )
    assert _deltas(seen["plain"]) == []
    # The streamed result is the non-streamed one: same text, usage, fields.
    chat, plain = final["s-chat"], final["plain"]
    assert chat["output_text"] == plain["output_text"] and chat["usage"] == plain["usage"]
    assert chat["cost_usd"] == plain["cost_usd"] and chat.keys() == plain.keys()
    # ... and the usage is what the simulator counted (it served exactly these three calls).
    assert billed["prompt_tokens"] == sum(d["usage"]["input_tokens"] for d in final.values())
    assert billed["completion_tokens"] == sum(d["usage"]["output_tokens"] for d in final.values())
    assert all(d["usage"]["output_tokens"] > 0 for d in final.values())


def test_a_finished_job_streams_its_final_status_only(api_stack: ApiStack) -> None:
    """A late subscriber gets no history: just the final document, whose text is complete."""
    c = api_stack.client("streamer")
    body = {"images": [data_url(make_image(99))], "prompt": "Describe.", "stream": True}
    assert c.post("/v1/jobs", json={**body, "job_id": "late"}).status_code == 202
    doc = wait_done(c, "late")
    events: Events = []
    _follow(c, "late", events, threading.Event())
    assert events == [("status", doc)] and doc["output_text"]


def test_stream_is_refused_where_it_cannot_apply(api_stack: ApiStack) -> None:
    c = api_stack.client("streamer")
    img = data_url(make_image(98))
    bad = c.post("/v1/jobs", json={"images": [img], "prompt": "x", "stream": "maybe"})
    assert bad.status_code == 400 and "stream" in bad.json()["error"]["message"]
    batch = c.post("/v1/jobs", json={"images": [img], "prompt": "x", "stream": True,
                                     "route": "batch"})  # fmt: skip
    assert batch.status_code == 202
    assert batch.json()["status"] == "failed" and batch.json()["error"]["code"] == "invalid_job"


def test_a_broken_stream_is_retried_and_its_deltas_start_over(api_stack: ApiStack) -> None:
    """Every stream cut halfway: each attempt's text starts again at offset 0 with the next
    attempt number, and the job fails with the retryable error a dropped call gives."""
    c = api_stack.client("streamer")
    body = {"images": [data_url(make_image(97 + i)) for i in range(3)], "prompt": "Describe.",
            "stream": True, "priority": "bulk", "job_id": "cut", "dedup": False}  # fmt: skip
    assert c.post("/v1/jobs", json=body).status_code == 202
    events: Events = []
    connected = threading.Event()
    follower = threading.Thread(target=_follow, args=(c, "cut", events, connected), daemon=True)
    follower.start()
    assert connected.wait(30)
    sim = start_simulator("--latency-ms", "5", "--jitter-ms", "0", "--tpm", "10000000",
                          "--rpm", "100000", "--stream-cut-rate", "1")  # fmt: skip
    log = open(api_stack.tmp / "cut-worker.log", "wb")  # noqa: SIM115
    env = worker_env(api_stack.redis_url, sim, IMGQ_MAX_ATTEMPTS="2")
    worker = subprocess.Popen(
        [sys.executable, "-m", "imgq.cli", "worker", "-c", "2", "-Q", "bulk",
         "-n", f"api-cut-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        doc = wait_done(c, "cut")
        follower.join(timeout=60)
        cuts = sim.stats()["faults"]["stream_cut"]
    finally:
        stop_processes(worker)
        log.close()
        stop_simulator(sim)
    assert doc["status"] == "failed" and doc["attempts"] == 2 and cuts == 2, doc
    assert doc["error"]["code"] == "connection_error" and doc["error"]["retryable"]
    deltas = _deltas(events)
    assert {d["attempt"] for d in deltas} == {1, 2}, deltas
    for attempt in (1, 2):
        mine = [d for d in deltas if d["attempt"] == attempt]
        assert mine[0]["offset"] == 0, mine  # the retried call's text starts over
    assert events[-1] == ("status", doc)
