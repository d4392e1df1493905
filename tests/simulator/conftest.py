"""Module-scoped simulators: starting one costs ~1 s, so tests of a module share it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Sim, start_simulator, stop_simulator


@pytest.fixture(scope="module")
def fast_sim() -> Iterator[Sim]:
    """No latency, no faults, limits far above anything a test sends; reset before each use."""
    sim = start_simulator(
        "--latency-ms",
        "0",
        "--jitter-ms",
        "0",
        "--tpm",
        "100000000",
        "--rpm",
        "1000000",
        "--seed",
        "1",
    )
    yield sim
    stop_simulator(sim)


@pytest.fixture
def sim(fast_sim: Sim) -> Sim:
    fast_sim.reset()
    return fast_sim
