"""Shared fixtures: real Redis processes and the real simulator over HTTP, each on a free port."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from shared.embedded_redis import EmbeddedRedis, free_port
from tests.procs import Starter, WorkerFactory, stop_processes, wait_for_worker, worker_env

if TYPE_CHECKING:
    from tests.local_http import ApiFactory

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT / ".cache" / "tiktoken"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One Redis process for the session; tests that need isolation use `redis_url`."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A clean database on the session's Redis (flushed before each test)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@dataclass
class Sim:
    base_url: str  # ends with /v1
    root: str
    proc: subprocess.Popen[bytes]

    def stats(self) -> dict:  # type: ignore[type-arg]
        import json

        with urllib.request.urlopen(f"{self.root}/_sim/stats", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.root}/_sim/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=5).close()


def start_simulator(*args: str) -> Sim:
    """Run `python -m simulator` on a free port with extra CLI flags; wait until it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            # The admin endpoint needs no key, so a simulator started with --api-key answers too.
            urllib.request.urlopen(f"{root}/_sim/stats", timeout=1).close()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"simulator did not start: {cmd}") from None
            time.sleep(0.05)
    return Sim(base_url=f"{root}/v1", root=root, proc=proc)


def stop_simulator(sim: Sim) -> None:
    sim.proc.terminate()
    try:
        sim.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        sim.proc.kill()


@pytest.fixture
def simulator_factory() -> Iterator[Callable[..., Sim]]:
    """Start simulators with custom flags; all are stopped after the test."""
    started: list[Sim] = []

    def make(*args: str) -> Sim:
        sim = start_simulator(*args)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        stop_simulator(sim)


@pytest.fixture
def simulator(simulator_factory: Callable[..., Sim]) -> Sim:
    """A fast simulator with generous limits and no faults."""
    return simulator_factory(
        "--latency-ms",
        "5",
        "--jitter-ms",
        "0",
        "--tpm",
        "10000000",
        "--rpm",
        "100000",
        "--seed",
        "1",
    )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Starter]:
    """Start processes with a log file each (``tmp_path/NAME.log``); all stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env or dict(os.environ), stdout=log, stderr=log)
        procs.append(proc)
        return proc

    yield start
    stop_processes(*procs)


@pytest.fixture
def worker_factory(redis_url: str, processes: Starter) -> WorkerFactory:
    """Start real `imgq worker` processes (logs: ``tmp_path/worker0.log``, ...)."""
    count = itertools.count()

    def start(
        sim: Sim, *, concurrency: int = 16, wait_for_bindings: bool = True, **env: str
    ) -> subprocess.Popen[bytes]:
        n = next(count)
        cmd = [sys.executable, "-m", "imgq.cli", "worker", "-c", str(concurrency),
               "-l", "INFO", "-n", f"w{n}-{os.getpid()}@%h"]  # fmt: skip
        proc = processes(f"worker{n}", cmd, worker_env(redis_url, sim, **env))
        if wait_for_bindings:  # Redis broker: kombu's bindings tell when the worker consumes
            wait_for_worker(redis_url)
        return proc

    return start


@pytest.fixture
async def api_factory() -> AsyncIterator[ApiFactory]:
    """The real HTTP app on test servers: ``(settings, metrics=None, **kw) -> TestClient``."""
    from tests.local_http import api_clients  # the app is imported only by tests that use it

    async with api_clients() as make:
        yield make
