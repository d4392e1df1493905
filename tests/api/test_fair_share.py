"""Two tenants backlogged on one model at 3:1 key weights get 3:1 of its tokens (±10 %).

A dedicated bulk worker (started after the keys exist, so no reload is needed: running workers
also reload weights, tests/workers/test_tenant_weights.py) with room for every job at once, so all
of them wait in the fleet limiter together; gpt-4.1-nano is
limited to 6000 TPM. The first bucketful is granted in arrival order (no contention yet); the
share is measured over the next grants, while both tenants still have jobs waiting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import redis

from shared.storage.redis_store import RESULT_PREFIX
from tests.api.conftest import ApiStack, job
from tests.conftest import ROOT
from tests.pipeline.conftest import make_image
from tests.procs import stop_processes

JOBS_EACH = 120
SKIP, MEASURE = 90, 80  # completions: the uncontended first bucket, then the measured ones


@pytest.mark.slow
def test_weights_three_to_one_share_tokens_three_to_one(api_stack: ApiStack) -> None:
    api_stack.key("heavy", "--weight", "3")
    api_stack.key("light", "--weight", "1")
    heavy, light = api_stack.client("heavy"), api_stack.client("light")
    fields = {"model": "gpt-4.1-nano", "max_output_tokens": 50, "priority": "bulk",
              "dedup": False}  # fmt: skip
    for i in range(JOBS_EACH):  # interleaved: arrival order alone would give 1:1
        for c, name in ((heavy, "h"), (light, "l")):
            body = job(make_image(i, size=(70, 50)), job_id=f"{name}-{i}", **fields)  # own size
            assert c.post("/v1/jobs", json=body).status_code == 202
    limits = json.dumps({"gpt-4.1-nano": {"tpm": 6000, "rpm": 10_000}})
    env = {**api_stack.env, "IMGQ_MODEL_LIMITS": limits, "IMGQ_CAPACITY_WAIT_SECONDS": "600"}
    log = open(api_stack.tmp / "fair-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "imgq.cli", "worker", "-c", str(2 * JOBS_EACH + 20), "-Q", "bulk",
         "-n", f"api-fair-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    r = redis.Redis.from_url(api_stack.redis_url)  # results hold finished_at = grant + ~5 ms
    keys = [f"{RESULT_PREFIX}{t}~{n}-{i}" for t, n in (("heavy", "h"), ("light", "l"))
            for i in range(JOBS_EACH)]  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while True:
            docs = [json.loads(d) for d in r.mget(keys) if d]
            done = sorted((d for d in docs if d["status"] == "succeeded"),
                          key=lambda d: d["timings"]["finished_at"])  # fmt: skip
            if len(done) >= SKIP + MEASURE:
                break
            assert time.monotonic() < deadline, f"only {len(done)} done"
            time.sleep(1.0)
    finally:
        stop_processes(worker)
        log.close()
    window = done[SKIP : SKIP + MEASURE]
    tokens = {"heavy": 0, "light": 0}
    for d in window:
        tokens[d["job_id"].split("~")[0]] += d["usage"]["input_tokens"] + 50
    left = {t: sum(1 for d in docs if d["job_id"].startswith(t) and d["status"] != "succeeded")
            for t in tokens}  # fmt: skip
    ratio = tokens["heavy"] / tokens["light"]
    print(f"fair share over {MEASURE} grants: heavy/light tokens = {ratio:.2f} ({tokens})")
    assert 2.7 <= ratio <= 3.3, (ratio, tokens, left)
