from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from producer.limits_cmd import limits
from shared.limiter import LimitKey, key_fingerprint
from tests.limiter.helpers import MODEL, config, make


def test_imgq_limits_shows_usage_and_cooldown(
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
        lim = make(redis_url, config(6000, 60))
        done = await lim.acquire(key, 1500, max_output_tokens=500)
        await lim.acquire(key, 700)
        await lim.settle(done, prompt_tokens=900, completion_tokens=10)
        await lim.cooldown(key, 30)

    asyncio.run(use())
    res = CliRunner().invoke(limits, ["--json"])
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in json.loads(res.output)}
    row = rows[MODEL]
    assert (row["tpm"], row["tokens_used"], row["tokens_reserved"], row["requests"]) == (
        6000,
        1400,
        700,
        2,
    )
    assert row["tokens_available"] == 6000 - 2100 and 25 < row["cooldown_s"] <= 30
    assert row["account"] == key.account
    assert rows["gpt-4o"]["tpm"] == 1000 and rows["gpt-4o"]["tokens_used"] == 0  # configured
    assert "sk-cli-secret" not in res.output
    table = CliRunner().invoke(limits, ["--model", MODEL])
    assert table.exit_code == 0
    assert "RESERVED" in table.output and "1400" in table.output and "gpt-4o " not in table.output
