"""/_sim/stats and /_sim/reset report what the server saw; 1,000 requests can be in flight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp
import pytest

from shared.text_tokens import prompt_tokens
from tests.conftest import Sim
from tests.simulator.helpers import KEY, chat_body, data_url, image_bytes, post, sha16

CHAT = "/v1/chat/completions"
RED = image_bytes(16, 16, (255, 0, 0))
BLUE = image_bytes(16, 16, (0, 0, 255))
KEYS = {
    "requests",
    "codes",
    "admitted_tokens",
    "admitted_tokens_per_second",
    "max_tokens_in_any_60s",
    "peak_in_flight",
    "in_flight",
    "image_hashes",
    "completed",
    "started_at",
}


def test_stats_count_and_reset(sim: Sim) -> None:
    charge = prompt_tokens(["What is in this image?"], [85]) + 10
    for data in (RED, RED, BLUE):
        assert (
            post(sim.root, CHAT, chat_body(data_url(data), detail="low", max_tokens=10)).status
            == 200
        )
    assert post(sim.root, CHAT, chat_body(data_url(b"junk"))).status == 400
    assert post(sim.root, CHAT, chat_body(data_url(RED)), key=None).status == 401
    stats = sim.stats()
    assert set(stats) >= KEYS
    assert stats["requests"] == {"200": 3, "400": 1, "401": 1}
    assert stats["codes"] == {"invalid_image": 1, "invalid_request_error": 1}
    assert stats["image_hashes"] == {sha16(RED): 2, sha16(BLUE): 1}
    assert stats["admitted_tokens"] == 3 * charge
    assert sum(stats["admitted_tokens_per_second"]) == 3 * charge
    assert stats["max_tokens_in_any_60s"] == 3 * charge
    assert stats["max_requests_in_any_60s"] == 3
    assert stats["completed"] == 3
    assert stats["in_flight"] == 0 and stats["peak_in_flight"] >= 1
    assert stats["by_model"] == {"gpt-4o": {"admitted_requests": 3, "admitted_tokens": 3 * charge}}
    sim.reset()
    after = sim.stats()
    assert after["requests"] == {} and after["image_hashes"] == {} and after["completed"] == 0
    assert after["admitted_tokens"] == 0 and after["started_at"] >= stats["started_at"]


async def _flood(sim: Sim, n: int) -> list[int]:
    body = json.dumps(chat_body(data_url(RED), detail="low", max_tokens=10))
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.post(
                f"{sim.base_url}/chat/completions", data=body, headers=headers
            ) as resp:
                await resp.read()
                return resp.status

        return await asyncio.gather(*[one() for _ in range(n)])


@pytest.mark.slow
async def test_thousand_in_flight(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory(
        "--latency-ms", "1000", "--jitter-ms", "0", "--rpm", "100000", "--tpm", "100000000"
    )
    statuses = await _flood(sim, 1000)
    assert statuses == [200] * 1000
    stats = sim.stats()
    assert stats["peak_in_flight"] == 1000
    assert stats["completed"] == 1000 and stats["in_flight"] == 0
    assert stats["image_hashes"] == {sha16(RED): 1000}
