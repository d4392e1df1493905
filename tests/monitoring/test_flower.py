"""Flower (the compose `flower` service, same version) sees real imgq workers and their queues."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shared.embedded_redis import free_port
from tests.conftest import Sim
from tests.monitoring.conftest import imgq_command
from tests.procs import Starter, wait_for_worker, wait_http, worker_env

pytestmark = pytest.mark.slow


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def test_flower_lists_the_worker_and_its_queues(
    redis_url: str, simulator: Sim, processes: Starter, tmp_path: Path
) -> None:
    pytest.importorskip("flower", reason="flower is in the dev extra: pip install -e '.[dev]'")
    env = worker_env(redis_url, simulator)
    processes("worker", imgq_command("worker", "-c", "4", "-n", "flowertest@%h"), env)
    wait_for_worker(redis_url)
    port = free_port()
    flower_env = dict(os.environ, CELERY_BROKER_URL=redis_url, FLOWER_UNAUTHENTICATED_API="true")
    # As the compose service runs it: `celery flower`, no imgq app, only the broker URL.
    cmd = [sys.executable, "-m", "celery", "flower", f"--port={port}", "--address=127.0.0.1"]
    flower = processes("flower", cmd, flower_env)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthcheck", flower, tmp_path / "flower.log")
    assert get(f"{url}/healthcheck") == "OK"
    deadline = time.monotonic() + 60
    while True:
        workers = get(f"{url}/api/workers?refresh=1")
        names = [n for n in workers if n.startswith("flowertest@")]
        if names and workers[names[0]].get("active_queues"):
            break
        assert time.monotonic() < deadline, workers
        time.sleep(1)
    info = workers[names[0]]
    assert {q["name"] for q in info["active_queues"]} == {"interactive", "bulk"}
    assert info["stats"]["pool"]["max-concurrency"] == 4
