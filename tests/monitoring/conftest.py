"""Monitoring fixtures: real `imgq` processes (worker, API), redis_exporter and Prometheus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

Starter = Callable[..., subprocess.Popen[bytes]]


def imgq_command(*args: str) -> list[str]:
    """Run the `imgq` console script's function with this interpreter (no install needed)."""
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["imgq"]
    module, func = script.split(":")
    runner = f"import sys; sys.argv[0] = 'imgq'; from {module} import {func}; {func}()"
    return [sys.executable, "-c", runner, *args]


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} never answered:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Starter]:
    """Start processes with a log file each; SIGTERM (then SIGKILL) them all afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env or dict(os.environ), stdout=log, stderr=log)
        procs.append(proc)
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
