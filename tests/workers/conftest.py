"""Worker-part fixtures: simulators in several modes, started once per session, in parallel."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import Sim, start_simulator, stop_simulator

KEY = "sk-right-key-0123456789"
FLAGS = {
    "ok": ("--api-key", KEY, "--latency-ms", "0", "--jitter-ms", "0"),
    "tight": ("--api-key", KEY, "--latency-ms", "0", "--rpm", "1", "--tpm", "2000"),
    "quota": ("--api-key", KEY, "--insufficient-quota"),
    "fail": ("--api-key", KEY, "--latency-ms", "0", "--fail-rate", "1", "--seed", "3"),
}


@pytest.fixture(scope="session")
def sims() -> Iterator[dict[str, Sim]]:
    with ThreadPoolExecutor(len(FLAGS)) as pool:  # start-up is mostly waiting: overlap it
        started = dict(
            zip(FLAGS, pool.map(lambda f: start_simulator(*f), FLAGS.values()), strict=True)
        )
    yield started
    for sim in started.values():
        stop_simulator(sim)


@pytest.fixture(scope="session")
def silent_server() -> Iterator[tuple[str, str]]:
    """Two raw TCP endpoints (cheaper than two more simulators): one reads the request and never
    answers (a timeout), one reads it and closes the connection (a dropped connection, which is
    what the simulator's --reset-rate does). Yields their base URLs (hang, drop)."""
    hang = socket.create_server(("127.0.0.1", 0))
    drop = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve(listener: socket.socket, close: bool) -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                conn.recv(65536)
            if close:
                conn.close()
            else:
                held.append(conn)

    threads = [
        threading.Thread(target=serve, args=(s, c), daemon=True)
        for s, c in ((hang, False), (drop, True))
    ]
    for t in threads:
        t.start()
    yield tuple(f"http://127.0.0.1:{s.getsockname()[1]}/v1" for s in (hang, drop))  # type: ignore[misc]
    stop.set()
    for t in threads:
        t.join(2)
    for sock in (hang, drop, *held):
        sock.close()
