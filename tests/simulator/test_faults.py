"""Faults (--fail-rate, --reset-rate, --slow-rate, seeded) and latency, seen by SDK and raw HTTP."""

from __future__ import annotations

import http.client
import time
import urllib.error
from collections.abc import Callable

import pytest
from openai import APIConnectionError, APIStatusError, APITimeoutError, OpenAI

from tests.conftest import Sim
from tests.simulator.helpers import KEY, chat_body, data_url, image_bytes, post

CHAT = "/v1/chat/completions"
BODY = chat_body(data_url(image_bytes(16, 16)), detail="low", max_tokens=20)


def _statuses(sim: Sim, n: int) -> list[int]:
    return [post(sim.root, CHAT, BODY).status for _ in range(n)]


def test_fail_rate_answers_500_and_503(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "0", "--fail-rate", "1", "--seed", "3")
    replies = [post(sim.root, CHAT, BODY) for _ in range(16)]
    assert {r.status for r in replies} == {500, 503}
    for reply in replies:
        assert reply.error["type"] == "server_error"
        assert reply.error["code"] is None
        assert reply.headers["x-request-id"].startswith("req_")
    server = next(r for r in replies if r.status == 500)
    assert server.error["message"] == (
        "The server had an error while processing your request. Sorry about that!"
    )
    client = OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(APIStatusError) as info:
        client.chat.completions.create(**BODY)
    assert info.value.status_code in (500, 503)
    stats = sim.stats()
    assert stats["faults"] == {"fail": 17}
    assert stats["requests"]["500"] + stats["requests"]["503"] == 17
    assert stats["completed"] == 0


def test_seed_replays_the_same_faults(simulator_factory: Callable[..., Sim]) -> None:
    flags = ("--latency-ms", "0", "--fail-rate", "0.5")
    a = _statuses(simulator_factory(*flags, "--seed", "11"), 24)
    b = _statuses(simulator_factory(*flags, "--seed", "11"), 24)
    c = _statuses(simulator_factory(*flags, "--seed", "12"), 24)
    assert a == b
    assert a != c
    assert 200 in a and ({500, 503} & set(a))


def test_reset_rate_drops_the_connection(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "0", "--reset-rate", "1")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        post(sim.root, CHAT, BODY)
    client = OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(APIConnectionError):
        client.chat.completions.create(**BODY)
    stats = sim.stats()
    assert stats["faults"] == {"reset": 2}
    assert stats["requests"] == {}
    assert stats["in_flight"] == 0


def test_slow_rate_outlasts_the_client_timeout(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "0", "--slow-rate", "1")
    client = OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(APITimeoutError):
        client.chat.completions.create(**BODY)
    assert time.monotonic() - start < 5
    assert sim.stats()["faults"] == {"slow": 1}
    # The client hung up: the server frees the request instead of holding it for 10 minutes.
    deadline = time.monotonic() + 5
    while sim.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["in_flight"] == 0


def test_latency(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "300", "--jitter-ms", "0")
    start = time.monotonic()
    reply = post(sim.root, CHAT, BODY)
    assert reply.status == 200
    assert time.monotonic() - start >= 0.3
    assert int(reply.headers["openai-processing-ms"]) >= 300
