"""Pipeline fixtures: real `imgq worker` processes against a real Redis and the simulator."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image

from shared.images import prepare_image
from tests.conftest import ROOT, Sim

WorkerFactory = Callable[..., subprocess.Popen[bytes]]


def worker_env(redis_url: str, sim: Sim, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("IMGQ_") or k.startswith("OPENAI_"):
            del env[k]
    env.update(
        IMGQ_REDIS_URL=redis_url,
        OPENAI_BASE_URL=sim.base_url,
        OPENAI_API_KEY="sk-test-not-a-real-key",
        IMGQ_FETCH_ALLOW_HOSTS='["127.0.0.1"]',
    )
    env.update(extra)
    return env


def wait_for_worker(redis_url: str, timeout: float = 30.0) -> None:
    """A worker is ready once Celery has registered its queue consumers (kombu bindings)."""
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.exists("_kombu.binding.interactive"):
            time.sleep(0.5)
            return
        time.sleep(0.1)
    raise TimeoutError("worker did not start")


@pytest.fixture
def worker_factory(redis_url: str, tmp_path: Path) -> Iterator[WorkerFactory]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        sim: Sim, *, concurrency: int = 16, wait_for_bindings: bool = True, **env: str
    ) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker{len(procs)}.log", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "imgq.cli", "worker", "-c", str(concurrency),
               "-l", "INFO", "-n", f"w{len(procs)}-{os.getpid()}@%h"]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=worker_env(redis_url, sim, **env), stdout=log, stderr=log
        )
        procs.append(proc)
        if wait_for_bindings:  # Redis broker: kombu's bindings tell when the worker consumes
            wait_for_worker(redis_url)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def make_image(seed: int, size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> bytes:
    """A small distinct image per seed."""
    colour = ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256)
    im = Image.new("RGB", size, colour)
    im.putpixel((seed % size[0], 0), (255 - colour[0], 0, 0))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def sent_hash(data: bytes, model: str = "gpt-4.1-mini", detail: str = "auto") -> str:
    """What the simulator reports for an image imgq prepared: sha256[:16] of the bytes sent."""
    prepared = prepare_image(data, model=model, detail=detail)  # type: ignore[arg-type]
    return hashlib.sha256(prepared.data).hexdigest()[:16]
