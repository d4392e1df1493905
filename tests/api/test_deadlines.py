"""A per-job deadline over HTTP (`deadline_seconds`, JSON, multipart, batch) and from the CLI
(`imgq submit --deadline`): a job not finished by then fails `expired`.

The jobs are `bulk`, which the stack's worker does not take: they wait until their deadline
has passed, then a bulk worker starts and finds them late (the deadline is checked, against
Redis' clock, when a worker takes the job).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.api.conftest import ApiStack, imgq, job, wait_done
from tests.conftest import ROOT
from tests.pipeline.conftest import make_image
from tests.procs import stop_processes, worker_env

DEADLINE = 0.2


def _accepted(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 202, resp.text
    doc: dict[str, Any] = resp.json()
    assert doc["status"] == "queued", doc
    return doc


def test_jobs_past_their_deadline_fail_expired(api_stack: ApiStack, tmp_path: Path) -> None:
    c = api_stack.client("deadliner")
    late = [
        _accepted(c.post("/v1/jobs", json=job(make_image(150), job_id="dl-json",
                                              priority="bulk", deadline_seconds=DEADLINE))),
        _accepted(c.post("/v1/jobs", files={"image": ("a.png", make_image(151))},
                         data={"prompt": "Describe.", "job_id": "dl-form", "priority": "bulk",
                               "deadline_seconds": str(DEADLINE)})),
    ]  # fmt: skip
    batch = c.post("/v1/jobs/batch", json={"jobs": [
        job(make_image(152), job_id="dl-batch", priority="bulk", deadline_seconds=DEADLINE),
        job(make_image(153), job_id="dl-long", priority="bulk", deadline_seconds=3600),
    ]})  # fmt: skip
    assert batch.status_code == 200, batch.text
    items = batch.json()["jobs"]
    assert [i["status"] for i in items] == [202, 202], items
    late.append(items[0]["job"])
    # The CLI (no key: open mode on the same Redis) with --deadline.
    photo = tmp_path / "p.png"
    photo.write_bytes(make_image(154))
    out = imgq(api_stack.env, "submit", str(photo), "-p", "Describe.", "--priority", "bulk",
               "--deadline", str(DEADLINE))  # fmt: skip
    assert out.returncode == 0, out.stderr
    cli_id, submitted = out.stdout.strip(), time.time()

    # Every deadline passes before a worker can take the jobs (all were submitted before
    # `submitted`; this process and Redis share the machine's clock).
    assert all(d["timings"]["queued_at"] < submitted for d in late)
    while time.time() <= submitted + DEADLINE:
        time.sleep(0.05)
    log = open(api_stack.tmp / "deadline-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "imgq.cli", "worker", "-c", "2", "-Q", "bulk",
         "-n", f"api-deadline-{os.getpid()}@%h"],
        cwd=ROOT, env=worker_env(api_stack.redis_url, api_stack.sim), stdout=log, stderr=log,
    )  # fmt: skip
    try:
        final = {j: wait_done(c, j) for j in ("dl-json", "dl-form", "dl-batch", "dl-long")}
        cli = imgq(api_stack.env, "status", cli_id)
    finally:
        stop_processes(worker)
        log.close()
    for job_id in ("dl-json", "dl-form", "dl-batch"):
        doc = final[job_id]
        assert doc["status"] == "failed" and doc["error"]["code"] == "expired", doc
        assert doc["attempts"] == 0 and doc["cost_usd"] == 0, doc  # never called the model
    assert final["dl-long"]["status"] == "succeeded", final["dl-long"]
    assert cli.returncode == 0 and f"{cli_id} failed" in cli.stdout and "expired" in cli.stdout


def test_bad_deadlines_are_400(api_stack: ApiStack, tmp_path: Path) -> None:
    c = api_stack.client("deadliner")
    img = make_image(155)
    for bad in (0, -1, "soon", True, "nan", [5], {"s": 1}):
        resp = c.post("/v1/jobs", json=job(img, deadline_seconds=bad))
        assert resp.status_code == 400, (bad, resp.text)
        err = resp.json()["error"]
        assert err["code"] == "invalid_job" and "deadline_seconds" in err["message"], err
        assert err["request_id"]
    for bad in ("0", "-5", "inf", "ten"):
        resp = c.post("/v1/jobs", files={"image": ("a.png", img)},
                      data={"prompt": "Describe.", "deadline_seconds": bad})  # fmt: skip
        assert resp.status_code == 400 and "deadline_seconds" in resp.text, (bad, resp.text)
    huge = c.post("/v1/jobs", data=b'{"prompt": "x", "deadline_seconds": 1e999}',
                  headers={"Content-Type": "application/json"})  # fmt: skip
    assert huge.status_code == 400, huge.text  # JSON's 1e999 is infinity
    batch = c.post("/v1/jobs/batch", json={"jobs": [job(img, deadline_seconds=-3)]})
    assert batch.status_code == 200
    (item,) = batch.json()["jobs"]
    assert item["status"] == 400 and item["error"]["code"] == "invalid_job", item
    photo = tmp_path / "p.png"
    photo.write_bytes(img)
    out = imgq(api_stack.env, "submit", str(photo), "-p", "x", "--deadline", "0")
    assert out.returncode == 2 and "--deadline" in out.stderr, out.stderr
