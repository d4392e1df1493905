"""Helpers shared by benchmarks: processes (Redis, simulator, workers), statistics, BENCHMARKS.md.

Every part runs as its own process on a free port, like the tests: a benchmark measures the real
thing, and ``time.process_time()`` / ``/proc`` CPU figures stay per process.

>>> median([3.0, 1.0, 2.0])
2.0
>>> percentile([float(i) for i in range(1, 101)], 99)
99.01
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from shared.embedded_redis import free_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "BENCHMARKS.md"
HUGE_TPM = 10_000_000_000  # limits no benchmark load comes near: the limiter never waits
HUGE_RPM = 100_000_000


# -- statistics -----------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return math.nan
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100), like numpy's default."""
    s = sorted(values)
    if not s:
        return math.nan
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# -- machine and report ---------------------------------------------------------------------------
def machine_summary() -> str:
    return (
        f"{os.cpu_count()} CPUs (nproc), {platform.machine()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


def write_section(name: str, text: str, path: Path) -> None:
    """Put ``text`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appended if new)."""
    begin, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + section + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(new)


# -- processes ------------------------------------------------------------------------------------
def bench_env(**extra: str) -> dict[str, str]:
    """This environment without any IMGQ_/OPENAI_ setting of the caller, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGQ_", "OPENAI_"))}
    env.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT / ".cache" / "tiktoken"))
    env.update(extra)
    return env


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    # Fields after "(comm)": state is [0], utime [11], stime [12] (man 5 proc, fields 14-15).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM (Celery: warm shutdown), then SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_redis_key(redis_url: str, key: str, timeout: float = 60.0) -> None:
    """Wait until ``key`` exists (Celery workers create ``_kombu.binding.<queue>`` when ready)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while not r.exists(key):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{key} did not appear within {timeout}s")
            time.sleep(0.1)
    finally:
        r.close()


class Simulator:
    """``python -m simulator`` on a free port, as its own process (its CPU is not ours)."""

    def __init__(self, *flags: str, log: IO[bytes] | None = None) -> None:
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/v1"
        cmd = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(self.port),
               "--log-level", "warning", *flags]  # fmt: skip
        out = log if log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=bench_env(), stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"simulator did not start: {cmd}") from None
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.root}/_sim/stats", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.root}/_sim/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)

    def __enter__(self) -> Simulator:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def fast_simulator_flags(latency_ms: float = 0) -> list[str]:
    """A simulator that never rate-limits and answers after ``latency_ms`` exactly."""
    return ["--latency-ms", f"{latency_ms:g}", "--jitter-ms", "0", "--tpm", str(HUGE_TPM),
            "--rpm", str(HUGE_RPM), "--seed", "1"]  # fmt: skip


def start_imgq_worker(
    redis_url: str,
    sim: Simulator,
    *,
    concurrency: int,
    name: str,
    log: IO[bytes] | None = None,
    wait: bool = True,
    **env: str,
) -> subprocess.Popen[bytes]:
    """One real ``imgq worker`` process; returns once its queue consumers are registered.

    ``wait=False``: return at once (start several, then ``wait_for_redis_key``).
    """
    cmd = [sys.executable, "-m", "imgq.cli", "worker", "-c", str(concurrency),
           "-Q", "interactive,bulk", "-l", "WARNING", "-n", f"{name}-{os.getpid()}@%h"]  # fmt: skip
    full_env = bench_env(
        IMGQ_REDIS_URL=redis_url,
        OPENAI_BASE_URL=sim.base_url,
        OPENAI_API_KEY="sk-bench-not-a-real-key",
        IMGQ_LOG_LEVEL="WARNING",
        **env,
    )
    out = log if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=out)
    if not wait:
        return proc
    try:
        wait_for_redis_key(redis_url, "_kombu.binding.interactive")
    except TimeoutError:
        stop_process(proc)
        raise
    return proc
