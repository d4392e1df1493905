"""Re-enqueued jobs of a budgeted key (issue 11): `imgq dlq retry` reserves again (over budget:
``budget_exceeded``, no call); the reconciler's re-enqueue keeps the reservation it has.
Real `imgq api` and `imgq worker` processes, Redis and the simulator."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from shared.dlq import DLQ_KEY
from shared.embedded_redis import free_port
from tests.conftest import ROOT, Sim
from tests.generate.conftest import fast_sim_args
from tests.pipeline.conftest import WorkerFactory, worker_env
from tests.procs import Starter, wait_http

pytestmark = pytest.mark.slow
# gpt-image-1 at quality low, size unset: reserved as the costliest size (408 output tokens)
# plus the prompt with its framing (8 tokens); billed for 1024x1024 (272) and 2 prompt tokens.
KITE = {"prompt": "a kite", "model": "gpt-image-1", "quality": "low"}
KITE_RESERVED = (408 * 40 + 8 * 5) / 1e6
KITE_BILLED = (272 * 40 + 2 * 5) / 1e6
DALLE = {"prompt": "a kite", "model": "dall-e-3", "size": "1024x1024"}  # $0.04, reserved = billed


def _imgq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgq.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


class Stack:
    def __init__(self, redis_url: str, sim: Sim, processes: Starter, tmp: Path) -> None:
        self.env = worker_env(redis_url, sim)
        self._processes, self._tmp = processes, tmp
        self.keys: dict[str, tuple[str, str]] = {}  # name -> (secret, id)

    def api(self, name: str, **env: str) -> str:
        port = free_port()
        cmd = [sys.executable, "-m", "imgq.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
        proc = self._processes(name, cmd, {**self.env, **env})
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, self._tmp / f"{name}.log")
        return f"http://127.0.0.1:{port}"

    def key(self, tenant: str, budget: str) -> str:
        out = _imgq(self.env, "keys", "create", "--tenant", tenant, "--daily-budget-usd", budget,
                    "--json")  # fmt: skip
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        self.keys[tenant] = (doc["key"], doc["id"])
        return tenant

    def post(self, base: str, tenant: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = requests.post(base + "/v1/images/generations", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {self.keys[tenant][0]}"})  # fmt: skip
        assert resp.status_code == 202, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def wait(self, base: str, tenant: str, job_id: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.keys[tenant][0]}"}
        deadline = time.monotonic() + 60
        while True:
            doc: dict[str, Any] = requests.get(f"{base}/v1/jobs/{job_id}", params={"wait": "20"},
                                               headers=headers, timeout=30).json()  # fmt: skip
            if doc["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
                return doc

    def spent(self, tenant: str) -> float:
        out = _imgq(self.env, "keys", "usage", "--json")
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        return float(next(r for r in rows if r["id"] == self.keys[tenant][1])["day_usd"])

    def spent_becomes(self, tenant: str, expected: float) -> None:
        deadline = time.monotonic() + 15
        while self.spent(tenant) != pytest.approx(expected, abs=1e-6):
            assert time.monotonic() < deadline, (tenant, self.spent(tenant), expected)
            time.sleep(0.2)


@pytest.fixture
def images_sim(simulator_factory: Callable[..., Sim]) -> Sim:
    return simulator_factory(*fast_sim_args())


def test_dlq_retry_reserves_again_and_refuses_over_budget_without_a_call(
    redis_url: str, images_sim: Sim, processes: Starter, worker_factory: WorkerFactory,
    tmp_path: Path,
) -> None:  # fmt: skip
    s = Stack(redis_url, images_sim, processes, tmp_path)
    roomy, tight = s.key("roomy", "1"), s.key("tight", "0.05")
    # Jobs from this API get a 1 s deadline: with no worker yet, both die `expired`.
    short = s.api("api-short", IMGQ_JOB_DEADLINE_SECONDS="1")
    assert s.post(short, roomy, {**KITE, "job_id": "a"})["status"] == "queued"
    assert s.post(short, tight, {**DALLE, "job_id": "x"})["status"] == "queued"
    assert s.spent(roomy) == pytest.approx(KITE_RESERVED, abs=1e-6)
    assert s.spent(tight) == pytest.approx(0.04)
    time.sleep(1.5)  # both deadlines pass before any worker runs
    worker_factory(images_sim, concurrency=4)
    for tenant, job_id in ((roomy, "a"), (tight, "x")):
        assert s.wait(short, tenant, job_id)["error"]["code"] == "expired"
        s.spent_becomes(tenant, 0.0)  # dead-lettered: no call, the estimate given back
    r = redis.Redis.from_url(redis_url)
    assert {m.decode() for m in r.zrange(DLQ_KEY, 0, -1)} == {"roomy~a", "tight~x"}
    # Meanwhile the tight key spends $0.04 of its $0.05 on another job.
    normal = s.api("api-normal")
    y = s.post(normal, tight, {**DALLE, "job_id": "y"})
    assert s.wait(normal, tight, y["job_id"])["status"] == "succeeded"
    s.spent_becomes(tight, 0.04)
    calls = images_sim.stats()["admitted_requests"]
    assert calls == 1

    out = _imgq(s.env, "dlq", "retry", "roomy~a", "tight~x")
    assert out.returncode == 1, out.stdout + out.stderr  # one job was not queued
    assert f"roomy~a: queued again (${KITE_RESERVED:.4f} reserved" in out.stdout, out.stdout
    assert "tight~x: budget_exceeded, not queued (no call made)" in out.stdout, out.stdout
    done = s.wait(normal, roomy, "a")
    assert done["status"] == "succeeded" and done["cost_usd"] == pytest.approx(KITE_BILLED)
    s.spent_becomes(roomy, KITE_BILLED)  # one billed call: not two reservations, not one left
    refused = s.wait(normal, tight, "x")
    assert refused["status"] == "failed" and refused["error"]["code"] == "budget_exceeded"
    assert s.spent(tight) == pytest.approx(0.04)
    assert r.zscore(DLQ_KEY, "tight~x") is not None  # still there, to retry when it fits
    assert r.zscore(DLQ_KEY, "roomy~a") is None
    assert images_sim.stats()["admitted_requests"] == calls + 1  # roomy's retry only


def test_the_reconcilers_re_enqueue_keeps_the_one_reservation(
    redis_url: str, images_sim: Sim, processes: Starter, worker_factory: WorkerFactory,
    tmp_path: Path,
) -> None:  # fmt: skip
    s = Stack(redis_url, images_sim, processes, tmp_path)
    tenant = s.key("lost", "1")
    base = s.api("api")
    assert s.post(base, tenant, {**KITE, "job_id": "m"})["status"] == "queued"
    r = redis.Redis.from_url(redis_url)
    assert r.delete("interactive") == 1  # the message is lost; the reservation is held
    assert s.spent(tenant) == pytest.approx(KITE_RESERVED, abs=1e-6)
    worker_factory(images_sim, concurrency=4, IMGQ_RECONCILE_INTERVAL_SECONDS="1",
                   IMGQ_RECONCILE_STALE_SECONDS="2")  # fmt: skip
    done = s.wait(base, tenant, "m")
    assert done["status"] == "succeeded", done
    assert int(r.hget("imgq:job:lost~m", "reenqueued") or 0) >= 1  # the reconciler sent it
    s.spent_becomes(tenant, KITE_BILLED)  # settled once, with the bill
    assert images_sim.stats()["admitted_requests"] == 1
