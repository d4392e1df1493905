"""Per-model limits: explicit config (env ``IMGQ_MODEL_LIMITS`` or ``IMGQ_LIMITS_FILE``), limits the
API announced in its headers, then conservative tier defaults.

Which limit applies (computed inside the Lua script, so every process agrees):

* configured and discovered: the smaller one (the API knows the organisation's real limit; a
  smaller configured value keeps part of the key for someone else);
* only configured, or only discovered: that one;
* neither: the tier default below (tier-1 figures; the first answer's headers replace them).

>>> cfg = LimitsConfig.from_json('{"gpt-4.1-mini": {"tpm": 6000, "rpm": 60}}')
>>> cfg.configured_for("gpt-4.1-mini-2025-04-14")
ModelLimits(tpm=6000, rpm=60)
>>> cfg.default_for("gpt-4o-mini")
ModelLimits(tpm=200000, rpm=500)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shared.limiter.keys import DEFAULT_PREFIX

if TYPE_CHECKING:
    from shared.settings import Settings


@dataclass(frozen=True)
class ModelLimits:
    """Tokens and requests per minute; ``None`` leaves that one to discovery or the default."""

    tpm: int | None = None
    rpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("tpm", "rpm"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")


# Tier-1 style figures for the vision models of shared/vision_tokens.py: deliberately low, since a
# too-high default costs 429s and a too-low one only costs throughput until headers correct it.
TIER_DEFAULTS: dict[str, ModelLimits] = {
    "gpt-4o-mini": ModelLimits(200_000, 500),
    "gpt-4o": ModelLimits(30_000, 500),
    "chatgpt-4o": ModelLimits(30_000, 500),
    "gpt-4.1-mini": ModelLimits(200_000, 500),
    "gpt-4.1-nano": ModelLimits(200_000, 500),
    "gpt-4.1": ModelLimits(30_000, 500),
    "gpt-4.5": ModelLimits(125_000, 1_000),
    "gpt-5-mini": ModelLimits(200_000, 500),
    "gpt-5-nano": ModelLimits(200_000, 500),
    "gpt-5": ModelLimits(30_000, 500),
    "o4-mini": ModelLimits(100_000, 1_000),
    "o1": ModelLimits(30_000, 500),
    "o3": ModelLimits(30_000, 500),
    "computer-use-preview": ModelLimits(20_000, 300),
}
FALLBACK = ModelLimits(30_000, 500)


def _longest_prefix(table: Mapping[str, ModelLimits], model: str) -> ModelLimits | None:
    if model in table:
        return table[model]
    best = max((p for p in table if model.startswith(p)), key=len, default=None)
    return table[best] if best is not None else None


def _parse_table(data: Any, source: str) -> dict[str, ModelLimits]:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object {{model: {{tpm, rpm}}}}")
    out: dict[str, ModelLimits] = {}
    for model, spec in data.items():
        if not isinstance(spec, dict) or not set(spec) <= {"tpm", "rpm"}:
            raise ValueError(f"{source}: {model!r} needs an object with 'tpm' and/or 'rpm'")
        out[str(model)] = ModelLimits(tpm=spec.get("tpm"), rpm=spec.get("rpm"))
    return out


@dataclass(frozen=True)
class LimitsConfig:
    """Everything the limiter needs besides Redis. Immutable; build one per process.

    ``window_s`` is OpenAI's minute. An entry counts from its grant until ``window_s`` +
    ``margin_s`` after the answer (settle re-scores it), so a late admission by the API never lets
    two grants land in one of its minutes; ``margin_s`` only absorbs clock granularity. A call in
    flight counts until settled or released, or ``inflight_grace_s`` past its window when its
    worker died.
    """

    configured: Mapping[str, ModelLimits] = field(default_factory=dict)
    defaults: Mapping[str, ModelLimits] = field(default_factory=lambda: dict(TIER_DEFAULTS))
    fallback: ModelLimits = FALLBACK
    window_s: float = 60.0
    margin_s: float = 0.25
    # "answer": a call counts for a window after its answer (safe however late the API admits it);
    # "grant": after its grant (TPM x 60/60.25, but trusts the API to admit within ``margin_s``).
    count_from: Literal["answer", "grant"] = "answer"
    inflight_grace_s: float = 120.0
    # Headers saying the API has less left than we think resync only beyond this share of the limit.
    resync_tolerance: float = 0.05
    # A waiting process re-checks at least this often (capacity freed by refunds elsewhere).
    max_poll_s: float = 0.25
    # After this many interactive grants in a row while bulk waits, one bulk waiter goes next.
    interactive_burst: int = 4
    prefix: str = DEFAULT_PREFIX

    def configured_for(self, model: str) -> ModelLimits | None:
        return _longest_prefix(self.configured, model)

    def default_for(self, model: str) -> ModelLimits:
        found = _longest_prefix(self.defaults, model)
        tpm = (found.tpm if found else None) or self.fallback.tpm
        rpm = (found.rpm if found else None) or self.fallback.rpm
        return ModelLimits(tpm, rpm)

    @property
    def window_ms(self) -> int:
        return round((self.window_s + self.margin_s) * 1000)

    @classmethod
    def from_json(cls, text: str, **kwargs: Any) -> LimitsConfig:
        return cls(configured=_parse_table(json.loads(text), "model limits"), **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LimitsConfig:
        """``limits_file`` first, then ``model_limits`` on top (the env wins per model)."""
        table: dict[str, ModelLimits] = {}
        if settings.limits_file is not None:
            text = Path(settings.limits_file).read_text(encoding="utf-8")
            table.update(_parse_table(json.loads(text), str(settings.limits_file)))
        if settings.model_limits:
            table.update(_parse_table(json.loads(settings.model_limits), "IMGQ_MODEL_LIMITS"))
        return cls(configured=table, **kwargs)
