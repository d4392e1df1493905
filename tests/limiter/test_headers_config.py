from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.limiter import (
    LimitKey,
    LimitsConfig,
    ModelLimits,
    key_fingerprint,
    parse_duration,
    parse_ratelimit_headers,
    retry_after_seconds,
)
from shared.settings import Settings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("120ms", 0.12),
        ("1m30.5s", 90.5),
        ("8.64s", 8.64),
        ("1h2m3s", 3723.0),
        ("0s", 0.0),
        ("17ms", 0.017),
        ("2", 2.0),
        ("0.5", 0.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "1x", "s", "-1", "1m-3s", "nan"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_headers_full_and_partial() -> None:
    h = parse_ratelimit_headers({
        "x-ratelimit-limit-requests": "60", "X-RateLimit-Limit-Tokens": "6000",
        "x-ratelimit-remaining-requests": "59", "x-ratelimit-remaining-tokens": "4976",
        "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "10.24s",
    })  # fmt: skip
    assert (h.limit_requests, h.limit_tokens, h.remaining_requests, h.remaining_tokens) == (
        60,
        6000,
        59,
        4976,
    )
    assert h.reset_requests_s == 1.0 and h.reset_tokens_s == pytest.approx(10.24)
    assert not h.empty
    bad = parse_ratelimit_headers({"x-ratelimit-limit-tokens": "lots", "content-type": "x"})
    assert bad.empty


def test_retry_after() -> None:
    assert retry_after_seconds({"Retry-After-Ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds({}) is None


def test_fingerprint_hides_key_and_separates_accounts() -> None:
    a = key_fingerprint("sk-proj-verysecret", "https://api.openai.com/v1")
    assert "verysecret" not in a and len(a) == 16
    assert a == key_fingerprint("sk-proj-verysecret", None)  # None = OpenAI's URL
    assert a != key_fingerprint("sk-other", "https://api.openai.com/v1")
    assert a != key_fingerprint("sk-proj-verysecret", "http://127.0.0.1:8000/v1")
    with pytest.raises(ValueError):
        LimitKey("bad model", a)


def test_config_precedence_env_over_file(tmp_path: Path) -> None:
    f = tmp_path / "limits.json"
    f.write_text(json.dumps({"gpt-4o": {"tpm": 1000, "rpm": 10}, "gpt-4.1": {"tpm": 5}}))
    s = Settings(limits_file=f, model_limits='{"gpt-4o": {"tpm": 2000}}')
    cfg = LimitsConfig.from_settings(s)
    assert cfg.configured_for("gpt-4o") == ModelLimits(2000, None)
    assert cfg.configured_for("gpt-4o-2024-08-06") == ModelLimits(2000, None)
    assert cfg.configured_for("gpt-4.1-mini") == ModelLimits(5, None)  # prefix, like vision rules
    assert cfg.configured_for("o3") is None
    assert cfg.default_for("gpt-4o-mini").tpm == 200_000  # the longer prefix wins
    assert cfg.default_for("totally-unknown") == cfg.fallback


def test_config_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_MODEL_LIMITS", '{"gpt-4.1-mini": {"tpm": 6000, "rpm": 60}}')
    cfg = LimitsConfig.from_settings(Settings())
    assert cfg.configured_for("gpt-4.1-mini") == ModelLimits(6000, 60)


@pytest.mark.parametrize(
    "text", ["[1]", '{"m": 5}', '{"m": {"tpm": -1}}', '{"m": {"tpx": 1}}', '{"m": {"tpm": 1.5}}']
)
def test_config_rejects_bad_json(text: str) -> None:
    with pytest.raises(ValueError):
        LimitsConfig.from_json(text)


def test_config_images_per_minute_and_tenant_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_MODEL_LIMITS", '{"gpt-image-1": {"tpm": 100000, "ipm": 50}}')
    monkeypatch.setenv("IMGQ_TENANT_WEIGHTS", '{"school-a": 3, "school-b": 1}')
    cfg = LimitsConfig.from_settings(Settings())
    assert cfg.configured_for("gpt-image-1") == ModelLimits(100_000, None, 50)
    assert cfg.weight("school-a") == 3.0 and cfg.weight(None) == 1.0 and cfg.weight("x") == 1.0
