"""Real processes in tests: a worker's environment, waits for readiness, and one way to stop them.

The fixtures built on these (``processes``, ``worker_factory``) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from tests.conftest import Sim

Starter = Callable[..., subprocess.Popen[bytes]]  # (name, cmd, env=None) -> the started process
WorkerFactory = Callable[..., subprocess.Popen[bytes]]  # (sim, *, concurrency, **env) -> worker


def worker_env(redis_url: str, sim: Sim, **extra: str) -> dict[str, str]:
    """This environment without any IMGQ_*/OPENAI_* variable, pointed at ``redis_url`` and ``sim``."""
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


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Until ``url`` answers 2xx; the tail of ``log`` in the error if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} never answered:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


def stop_processes(*procs: subprocess.Popen[bytes]) -> None:
    """SIGTERM all (a graceful stop), then SIGKILL each one still running after 20 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
