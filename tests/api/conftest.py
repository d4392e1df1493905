"""One real stack for the API-as-a-service tests (issue 11), package-scoped to keep them quick.

A private Redis, the simulator, one `imgq worker` consuming the *interactive* queue only (so a
`bulk` job stays queued until a test starts a bulk worker), and `imgq api` as its own process
with keys on (the default) and /metrics on a separate port. Keys are made with `imgq keys
create --json`, as an operator would.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import ROOT, Sim, start_simulator, stop_simulator
from tests.procs import stop_processes, wait_for_worker, wait_http, worker_env


def imgq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgq.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


class Api(requests.Session):
    """A session on the API's base URL: ``api.get("/v1/jobs")``."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any) -> Any:  # type: ignore[override]
        kw.setdefault("timeout", 60)
        return super().request(method, self.base_url + str(url), *args, **kw)


@dataclass
class ApiStack:
    redis_url: str
    sim: Sim
    url: str
    metrics_url: str
    env: dict[str, str]
    tmp: Path
    keys: dict[str, str] = field(default_factory=dict)  # name -> secret
    ids: dict[str, str] = field(default_factory=dict)  # name -> key id
    webhook_secrets: dict[str, str] = field(default_factory=dict)  # name -> its tenant's

    def key(self, name: str, *args: str, tenant: str | None = None, admin: bool = False) -> str:
        """The secret of key ``name`` (created on first use for ``tenant``, default ``name``)."""
        if name not in self.keys:
            extra = ["--admin"] if admin else []
            out = imgq(
                self.env, "keys", "create", "--tenant", tenant or name, *args, *extra, "--json"
            )
            assert out.returncode == 0, out.stderr
            doc = json.loads(out.stdout)
            self.keys[name], self.ids[name] = doc["key"], doc["id"]
            self.webhook_secrets[name] = doc["webhook_secret"]
        return self.keys[name]

    def client(self, name: str | None) -> Api:
        api = Api(self.url)
        if name:
            api.headers["Authorization"] = f"Bearer {self.key(name)}"
        return api


@pytest.fixture(scope="package")
def api_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    tmp = tmp_path_factory.mktemp("api")
    with EmbeddedRedis() as server:
        sim = start_simulator("--latency-ms", "5", "--jitter-ms", "0", "--tpm", "10000000",
                              "--rpm", "100000", "--seed", "1")  # fmt: skip
        port, mport = free_port(), free_port()
        env = worker_env(server.url, sim, IMGQ_API_METRICS_PORT=str(mport))
        wlog, alog = open(tmp / "worker.log", "wb"), open(tmp / "api.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "imgq.cli", "worker", "-c", "8", "-Q", "interactive",
             "-n", f"api-tests-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=wlog, stderr=wlog,
        )  # fmt: skip
        api = subprocess.Popen(
            [sys.executable, "-m", "imgq.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=alog, stderr=alog,
        )  # fmt: skip
        try:
            wait_for_worker(server.url)
            wait_http(f"http://127.0.0.1:{port}/healthz", api, tmp / "api.log")
            yield ApiStack(server.url, sim, f"http://127.0.0.1:{port}",
                           f"http://127.0.0.1:{mport}/metrics", env, tmp)  # fmt: skip
        finally:
            stop_processes(api, worker)
            wlog.close()
            alog.close()
            stop_simulator(sim)


def data_url(img: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(img).decode()


def job(img: bytes, **fields: Any) -> dict[str, Any]:
    return {"images": [data_url(img)], "prompt": "Describe this image.", **fields}


def wait_done(c: Api, job_id: str) -> dict[str, Any]:
    resp = c.get(f"/v1/jobs/{job_id}", params={"wait": "30"})
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    assert doc["status"] in ("succeeded", "failed"), doc
    return doc
