"""Cancel, batch and live events over real HTTP, with real workers.

The stack's worker consumes `interactive` only, so `bulk` jobs wait until a test starts a bulk
worker: a cancelled job must then never reach the simulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import redis

from tests.api.conftest import Api, ApiStack, job, wait_done
from tests.conftest import ROOT
from tests.pipeline.conftest import make_image, sent_hash
from tests.procs import stop_processes


def _events(c: Api, job_id: str, out: list[dict[str, Any]]) -> None:
    with c.get(f"/v1/jobs/{job_id}/events", stream=True) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(
            "text/event-stream"
        )
        event = None
        for line in resp.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "status":
                out.append(json.loads(line[6:]))


def _drained(redis_url: str, timeout: float = 60.0) -> None:
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.llen("bulk") == 0 and r.hlen("unacked") == 0:
            return
        time.sleep(0.2)
    raise TimeoutError("the bulk queue was not drained")


def test_a_cancelled_job_is_never_called_and_events_follow_a_job(api_stack: ApiStack) -> None:
    c = api_stack.client("canceller")
    gone, kept = make_image(60), make_image(61)
    assert c.post("/v1/jobs", json=job(gone, job_id="c-1", priority="bulk")).status_code == 202
    assert c.post("/v1/jobs", json=job(kept, job_id="c-2", priority="bulk")).status_code == 202
    seen: list[dict[str, Any]] = []
    watcher = threading.Thread(target=_events, args=(c, "c-2", seen), daemon=True)
    watcher.start()
    resp = c.delete("/v1/jobs/c-1")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["status"] == "failed" and doc["error"]["code"] == "cancelled"
    again = c.delete("/v1/jobs/c-1")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"
    log = open(api_stack.tmp / "bulk-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "imgq.cli", "worker", "-c", "4", "-Q", "bulk",
         "-n", f"api-bulk-{os.getpid()}@%h"],
        cwd=ROOT, env=api_stack.env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        assert wait_done(c, "c-2")["status"] == "succeeded"
        _drained(api_stack.redis_url)
    finally:
        stop_processes(worker)
        log.close()
    hashes = api_stack.sim.stats()["image_hashes"]
    kept_doc = c.get("/v1/jobs/c-2").json()
    assert sent_hash(kept) in hashes, kept_doc
    assert sent_hash(gone) not in hashes
    final = c.get("/v1/jobs/c-1").json()
    assert final["status"] == "failed" and final["error"]["code"] == "cancelled"
    assert final["attempts"] == 0
    # A finished job cannot be cancelled either.
    assert c.delete("/v1/jobs/c-2").status_code == 409
    watcher.join(timeout=30)
    statuses = [e["status"] for e in seen]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded", statuses
    assert seen[-1]["job_id"] == "c-2" and seen[-1]["output_text"]


def test_a_batch_answers_each_item_in_order(api_stack: ApiStack) -> None:
    c = api_stack.client("batcher")
    items = [
        job(make_image(62), job_id="m-1"),
        {"prompt": "no images", "images": "not a list"},
        job(make_image(63), job_id="bad id"),
        {"images": ["data:image/png;base64,aGVsbG8="], "prompt": "not an image"},
        job(make_image(64), job_id="m-1"),  # the same id as item 0: answered as it stands
    ]
    resp = c.post("/v1/jobs/batch", json={"jobs": items})
    assert resp.status_code == 200, resp.text
    out = resp.json()["jobs"]
    assert [o["status"] for o in out] == [202, 400, 400, 202, 200]
    assert out[1]["error"]["code"] == "invalid_job" and "list" in out[1]["error"]["message"]
    assert out[3]["job"]["error"]["code"] == "invalid_image"
    assert out[4]["job"]["job_id"] == "m-1"
    assert wait_done(c, "m-1")["status"] == "succeeded"
    too_many = c.post("/v1/jobs/batch", json={"jobs": [items[0]] * 101})
    assert too_many.status_code == 400
