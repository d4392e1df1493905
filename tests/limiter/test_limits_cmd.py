from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from producer.limits_cmd import limits
from shared.limiter import LimitKey, key_fingerprint
from tests.limiter.helpers import MODEL, Clock, config, make


def test_imgq_limits_shows_levels_refill_waiters_and_cooldown(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = "http://127.0.0.1:9/v1"
    monkeypatch.setenv("IMGQ_REDIS_URL", redis_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-secret")
    monkeypatch.setenv("OPENAI_BASE_URL", base)
    monkeypatch.setenv(
        "IMGQ_MODEL_LIMITS", json.dumps({MODEL: {"tpm": 6000, "rpm": 60}, "gpt-4o": {"tpm": 1000}})
    )
    key = LimitKey(MODEL, key_fingerprint("sk-cli-secret", base))

    async def use() -> None:
        lim = make(redis_url, config(6000, 60), clock=Clock())
        done = await lim.acquire(key, 1500, max_output_tokens=500)
        await lim.acquire(key, 700)
        await lim.settle(done, prompt_tokens=900, completion_tokens=10)  # charged 1400
        await lim.acquire(key, 3900)
        waiting = [asyncio.create_task(lim.acquire(key, 100, priority="bulk")) for _ in range(2)]
        waiting.append(asyncio.create_task(lim.acquire(key, 100)))
        await asyncio.sleep(0.3)  # in the fleet queue
        await lim.cooldown(key, 30)
        # this process stops here: its waiters stay in the queue (until seen dead)
        lim._lines[key].fail_all(RuntimeError("process gone"))
        await asyncio.gather(*waiting, return_exceptions=True)

    asyncio.run(use())
    res = CliRunner().invoke(limits, ["--json"])
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in json.loads(res.output)}
    row = rows[MODEL]
    assert (row["tpm"], row["tokens_reserved"], row["in_flight"]) == (6000, 4600, 2)
    # level: 6000 - 1400 - 700 - 3900 = 0 on the test's frozen clock, minus the 30 s of refill
    # the 429's cooldown gives up (the API had less than we held), refilled since (real time)
    assert -3000 <= row["tokens_level"] < -2800 and row["tokens_refill_per_s"] == 100.0
    assert 85 < row["seconds_to_full"] <= 90 and row["requests_level"] < 57.5
    assert (row["waiting_interactive"], row["waiting_bulk"]) == (1, 2)
    assert 25 < row["cooldown_s"] <= 30 and row["account"] == key.account
    assert rows["gpt-4o"]["tpm"] == 1000 and rows["gpt-4o"]["tokens_level"] == 1000  # configured
    assert "sk-cli-secret" not in res.output
    table = CliRunner().invoke(limits, ["--model", MODEL])
    assert table.exit_code == 0
    assert "WAITING I/B" in table.output and "1/2" in table.output and "gpt-4o " not in table.output
