"""RPM/TPM buckets, 429 bodies and headers as OpenAI sends them, refill over time, quota."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from openai import OpenAI, RateLimitError

from shared.text_tokens import prompt_tokens
from simulator.durations import parse_duration
from tests.conftest import Sim
from tests.simulator.helpers import KEY, Reply, chat_body, data_url, image_bytes, post

CHAT = "/v1/chat/completions"
URL = data_url(image_bytes(16, 16))
QUESTION = "What is in this image?"
# gpt-4o, detail low: 85 image tokens, one message.
PROMPT = prompt_tokens([QUESTION], [85])
RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)
TRY_AGAIN = re.compile(r"Please try again in ([0-9.hms]+)\. Visit https://platform\.openai\.com/")


def _call(sim: Sim, max_tokens: int | None = 10, **extra: object) -> Reply:
    body = chat_body(URL, detail="low", **extra)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return post(sim.root, CHAT, body)


def _assert_rate_headers(reply: Reply) -> None:
    for name in RATE_HEADERS:
        assert name in reply.headers, name
    parse_duration(reply.headers["x-ratelimit-reset-requests"])
    parse_duration(reply.headers["x-ratelimit-reset-tokens"])


def test_rpm_429_body_and_headers(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "0", "--rpm", "3", "--tpm", "1000000")
    remaining = [int(_call(sim).headers["x-ratelimit-remaining-requests"]) for _ in range(3)]
    assert remaining == [2, 1, 0]
    reply = _call(sim)
    assert reply.status == 429
    _assert_rate_headers(reply)
    err = reply.error
    assert (err["type"], err["code"], err["param"]) == ("requests", "rate_limit_exceeded", None)
    assert err["message"].startswith(
        "Rate limit reached for gpt-4o in organization org-simulator on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in "
    )
    match = TRY_AGAIN.search(err["message"])
    assert match, err["message"]
    wait = parse_duration(match.group(1))
    assert 19.0 < wait <= 20.0  # one request refills in 60 s / 3
    assert reply.headers["retry-after"] == "20"
    assert 19_000 < int(reply.headers["retry-after-ms"]) <= 20_000
    assert reply.headers["x-ratelimit-remaining-requests"] == "0"
    assert 59.0 < parse_duration(reply.headers["x-ratelimit-reset-requests"]) <= 60.0
    stats = sim.stats()
    assert stats["requests"] == {"200": 3, "429": 1}
    assert stats["codes"] == {"rate_limit_exceeded": 1}
    # Limits are per model: another model still has its own full buckets.
    assert _call(sim, model="gpt-4o-mini").status == 200
    # A reset refills every bucket.
    sim.reset()
    assert _call(sim).status == 200


def test_tpm_charge_429_and_refill(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "0", "--rpm", "100000", "--tpm", "6000")
    # Charge at admission = prompt tokens + max_tokens: this one takes the whole bucket.
    first = _call(sim, max_tokens=6000 - PROMPT)
    assert first.status == 200
    assert first.headers["x-ratelimit-remaining-tokens"] == "0"
    assert 59.0 < parse_duration(first.headers["x-ratelimit-reset-tokens"]) <= 60.0
    second = _call(sim, max_tokens=50)
    assert second.status == 429
    _assert_rate_headers(second)
    err = second.error
    assert (err["type"], err["code"]) == ("tokens", "rate_limit_exceeded")
    requested = PROMPT + 50
    used = re.search(r"Limit 6000, Used (\d+), Requested (\d+)\.", err["message"])
    assert used, err["message"]
    assert 5900 < int(used.group(1)) <= 6000 and int(used.group(2)) == requested
    assert "on tokens per min (TPM)" in err["message"]
    wait_ms = int(second.headers["retry-after-ms"])
    assert 0 < wait_ms <= requested * 10  # 100 tokens per second refill
    assert second.headers["retry-after"] == str(-(-wait_ms // 1000))
    time.sleep(wait_ms / 1000 + 0.05)
    third = _call(sim, max_tokens=50)
    assert third.status == 200, third.body
    stats = sim.stats()
    assert stats["admitted_tokens"] == 6000 + requested
    assert stats["max_tokens_in_any_60s"] == 6000 + requested


def test_request_too_large(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "0", "--tpm", "1000")
    reply = _call(sim, max_tokens=2000)
    assert reply.status == 429
    _assert_rate_headers(reply)
    assert (reply.error["type"], reply.error["code"]) == ("tokens", "rate_limit_exceeded")
    assert reply.error["message"] == (
        "Request too large for gpt-4o in organization org-simulator on tokens per min (TPM): "
        f"Limit 1000, Requested {PROMPT + 2000}. The input or output tokens must be reduced in "
        "order to run successfully. Visit https://platform.openai.com/account/rate-limits to "
        "learn more."
    )
    assert "retry-after" not in reply.headers  # waiting cannot help
    # Nothing was taken from the bucket.
    assert _call(sim, max_tokens=10).headers["x-ratelimit-remaining-tokens"] == str(
        1000 - PROMPT - 10
    )


@pytest.mark.parametrize(
    ("extra", "charged_output"),
    [
        ({}, 100),  # --default-max-tokens
        ({"max_tokens": 7}, 7),
        ({"max_completion_tokens": 9, "max_tokens": 7}, 9),
    ],
)
def test_admission_charge(
    simulator_factory: Callable[..., Sim],
    extra: dict[str, int],
    charged_output: int,
) -> None:
    sim = simulator_factory("--latency-ms", "0", "--tpm", "50000", "--default-max-tokens", "100")
    reply = post(sim.root, CHAT, chat_body(URL, detail="low", **extra))
    assert reply.status == 200
    charge = PROMPT + charged_output
    assert reply.headers["x-ratelimit-remaining-tokens"] == str(50000 - charge)
    assert sim.stats()["admitted_tokens"] == charge
    # Responses: instructions and input are prompt text; max_output_tokens is the budget.
    sim.reset()
    body = {
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "input": QUESTION,
        "max_output_tokens": 33,
    }
    reply = post(sim.root, "/v1/responses", body)
    expected = prompt_tokens(["Be brief.", QUESTION], messages=2) + 33
    assert reply.headers["x-ratelimit-remaining-tokens"] == str(50000 - expected)


def test_sdk_sees_rate_limit_error(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "0", "--rpm", "1")
    client = OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    client.responses.create(model="gpt-4o", input="hi", max_output_tokens=16)
    with pytest.raises(RateLimitError) as info:
        client.responses.create(model="gpt-4o", input="hi", max_output_tokens=16)
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.type == "requests"
    assert int(info.value.response.headers["retry-after-ms"]) > 59_000


def test_insufficient_quota(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "0", "--insufficient-quota")
    reply = _call(sim)
    assert reply.status == 429
    assert reply.body == {
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details. "
            "For more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    _assert_rate_headers(reply)
    assert "retry-after" not in reply.headers
    client = OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "insufficient_quota"
    assert sim.stats()["codes"] == {"insufficient_quota": 2}
