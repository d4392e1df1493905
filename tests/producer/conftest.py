"""One stack for the producer tests: a private Redis, the simulator and one real `imgq worker`.

Package-scoped to keep the suite fast: tests use their own job ids, so they never interfere.
Tests that need a broker without a worker use `idle_redis_url` (another database, no consumer).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from shared.embedded_redis import EmbeddedRedis
from tests.conftest import ROOT, Sim, start_simulator, stop_simulator
from tests.procs import stop_processes, wait_for_worker, worker_env


@dataclass
class Stack:
    redis_url: str
    sim: Sim
    worker: subprocess.Popen[bytes]
    log: Path

    @property
    def env(self) -> dict[str, str]:
        return worker_env(self.redis_url, self.sim)

    def idle_redis_url(self) -> str:
        """Database 1 of the same Redis: nothing consumes it, so enqueued messages stay put."""
        url = self.redis_url.rsplit("/", 1)[0] + "/1"
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        return url


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log = tmp_path_factory.mktemp("producer") / "worker.log"
    with EmbeddedRedis() as server:
        sim = start_simulator("--latency-ms", "5", "--jitter-ms", "0", "--tpm", "10000000",
                              "--rpm", "100000", "--seed", "1")  # fmt: skip
        fh = open(log, "wb")  # noqa: SIM115 - closed below
        cmd = [sys.executable, "-m", "imgq.cli", "worker", "-c", "8", "-l", "INFO",
               "-n", f"producer-tests-{os.getpid()}@%h"]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=worker_env(server.url, sim), stdout=fh, stderr=fh
        )
        try:
            wait_for_worker(server.url)
            yield Stack(server.url, sim, proc, log)
        finally:
            stop_processes(proc)
            fh.close()
            stop_simulator(sim)


@dataclass
class ImageServer:
    root: Path
    base_url: str

    def put(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return f"{self.base_url}/{name}"


@pytest.fixture(scope="package")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    """A real HTTP server on 127.0.0.1 serving files, for image URLs the worker fetches."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path_factory.mktemp("served")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ImageServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()
