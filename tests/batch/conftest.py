"""Batch tests: one fast simulator per module, its batch settings set through /_sim/batch."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Sim, start_simulator, stop_simulator
from tests.procs import WorkerFactory

KEY = "sk-test-batch-0123456789"


def sim_batch(sim: Sim, **settings: Any) -> dict[str, Any]:
    """Set the simulator's batch settings (none: just read them) and return its batch counters."""
    if settings:
        req = urllib.request.Request(
            f"{sim.root}/_sim/batch",
            method="POST",
            data=json.dumps(settings).encode(),
            headers={"Content-Type": "application/json"},
        )
    else:
        req = urllib.request.Request(f"{sim.root}/_sim/batch")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def batch_sim() -> Iterator[Sim]:
    sim = start_simulator(
        "--latency-ms", "0", "--jitter-ms", "0", "--tpm", "100000000", "--rpm", "1000000",
        "--seed", "1",
    )  # fmt: skip
    yield sim
    stop_simulator(sim)


@pytest.fixture
def bsim(batch_sim: Sim) -> Sim:
    urllib.request.urlopen(
        urllib.request.Request(f"{batch_sim.root}/_sim/batch/reset", method="POST", data=b""),
        timeout=10,
    ).close()
    sim_batch(
        batch_sim,
        validate_s=0.05,
        progress_s=0.1,
        finalize_s=0.05,
        line_fail_rate=0.0,
        fail_lines={},
        create_delay_s=0.0,
        upload_delay_s=0.0,
        concurrency=16,
        line_delay_s=0.0,
        expire_next=0,
        fail_uploads=0,
        enqueued_token_limit=None,
    )
    return batch_sim


# -- real worker processes ------------------------------------------------------------------
FAST_BATCHER = {
    "IMGQ_BATCH_LINGER_SECONDS": "1",
    "IMGQ_BATCH_TICK_SECONDS": "0.2",
    "IMGQ_BATCH_POLL_MIN_SECONDS": "0.2",
    "IMGQ_BATCH_POLL_MAX_SECONDS": "1",
    "IMGQ_BATCH_LEADER_SECONDS": "3",
}


@pytest.fixture
def batch_workers(worker_factory: WorkerFactory) -> WorkerFactory:
    """Start `imgq worker` processes with a fast batcher; all are stopped after the test."""

    def start(sim: Sim, *, concurrency: int = 16, **env: str) -> subprocess.Popen[bytes]:
        return worker_factory(sim, concurrency=concurrency, **{**FAST_BATCHER, **env})

    return start
