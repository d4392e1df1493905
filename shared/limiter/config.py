"""Per-model limits: explicit config (env ``IMGQ_MODEL_LIMITS`` or ``IMGQ_LIMITS_FILE``), limits the
API announced in its headers, then conservative tier defaults.

Which limit applies (computed inside the Lua script, so every process agrees):

* configured and discovered: the smaller one (the API knows the organisation's real limit; a
  smaller configured value keeps part of the key for someone else);
* only configured, or only discovered: that one;
* neither: the tier default below (tier-1 figures; the first answer's headers replace them).

>>> cfg = LimitsConfig.from_json('{"gpt-4.1-mini": {"tpm": 6000, "rpm": 60}}')
>>> cfg.configured_for("gpt-4.1-mini-2025-04-14")
ModelLimits(tpm=6000, rpm=60, ipm=None)
>>> cfg.default_for("gpt-4o-mini")
ModelLimits(tpm=200000, rpm=500, ipm=None)

Tenants' fair-share weights may change while a worker runs (a key created or re-weighted): give
the config a ``TenantWeights`` and ``replace`` its contents; the limiter reads the weight of each
new waiter when it enqueues it (``LimitsConfig.weight``), so the next waiters use the new one.

>>> weights = TenantWeights({"acme": 3})
>>> cfg = LimitsConfig(tenant_weights=weights)
>>> cfg.weight("acme"), cfg.weight("other")
(3.0, 1.0)
>>> weights.replace({"acme": 1, "other": 2})
True
>>> cfg.weight("acme"), cfg.weight("other")
(1.0, 2.0)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.catalogue import UNKNOWN, default_catalogue
from shared.limiter.keys import DEFAULT_PREFIX

if TYPE_CHECKING:
    from shared.settings import Settings


@dataclass(frozen=True)
class ModelLimits:
    """Tokens and requests per minute; ``None`` leaves that one to discovery or the default."""

    tpm: int | None = None
    rpm: int | None = None
    ipm: int | None = None  # images per minute (image-generation models)

    def __post_init__(self) -> None:
        for name in ("tpm", "rpm", "ipm"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")


def tier_defaults() -> dict[str, ModelLimits]:
    """Each catalogued model's default limits (shared/catalogue.py: tier-1, deliberately low)."""
    cat = default_catalogue()
    return {
        n: ModelLimits(tpm=s.limits.tpm, rpm=s.limits.rpm, ipm=s.limits.ipm)
        for n in cat.names
        if (s := cat.find(n)) is not None
    }


# Unknown models (one key, "unknown"): the catalogue's documented defaults.
FALLBACK = ModelLimits(UNKNOWN.limits.tpm, UNKNOWN.limits.rpm)


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
        if not isinstance(spec, dict) or not set(spec) <= {"tpm", "rpm", "ipm"}:
            raise ValueError(f"{source}: {model!r} needs an object with 'tpm', 'rpm' and/or 'ipm'")
        out[str(model)] = ModelLimits(spec.get("tpm"), spec.get("rpm"), spec.get("ipm"))
    return out


class TenantWeights(Mapping[str, float]):
    """Tenants' weights, replaceable as a whole while the limiter reads them (the config stays
    frozen; only this table changes). ``replace`` swaps one dict for another in one assignment,
    so a reader sees the old table or the new one, never a mix."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self._w: dict[str, float] = {k: float(v) for k, v in (weights or {}).items()}

    def replace(self, weights: Mapping[str, float]) -> bool:
        """Use ``weights`` from now on; whether anything changed."""
        new = {k: float(v) for k, v in weights.items()}
        changed = new != self._w
        self._w = new
        return changed

    def __getitem__(self, tenant: str) -> float:
        return self._w[tenant]

    def __iter__(self) -> Iterator[str]:
        return iter(self._w)

    def __len__(self) -> int:
        return len(self._w)

    def __repr__(self) -> str:
        return f"TenantWeights({self._w!r})"


@dataclass(frozen=True)
class LimitsConfig:
    """Everything the limiter needs besides Redis. Immutable; build one per process.

    The buckets hold one minute's worth and refill at limit/60 per second (the API's own model).
    ``margin_s`` of refill is kept back from a full bucket: the API admits a call a little after
    our grant, and while its bucket is full that delay costs refill we would otherwise count. A
    call in flight whose worker died is forgotten after ``inflight_grace_s`` (its charge stays).
    """

    configured: Mapping[str, ModelLimits] = field(default_factory=dict)
    defaults: Mapping[str, ModelLimits] = field(default_factory=tier_defaults)
    fallback: ModelLimits = FALLBACK
    margin_s: float = 1.0
    inflight_grace_s: float = 600.0
    # Headers saying the API has less left than we hold resync only beyond this share of the
    # limit: an answer's `remaining` is as old as the call's latency.
    resync_tolerance: float = 0.05
    # A waiting process calls Redis at least this often (grants made for it by other processes,
    # refunds elsewhere, its liveness).
    max_poll_s: float = 0.25
    # After this many interactive grants in a row while bulk waits, one bulk waiter goes next.
    interactive_burst: int = 4
    # Share of each bucket bulk grants leave untouched: an interactive call arriving behind a
    # saturated bulk backlog is granted at once instead of waiting for the next refill.
    interactive_reserve: float = 0.02
    # A waiter whose process has not called Redis for this long is dropped from the fleet queue.
    waiter_alive_s: float = 5.0
    # Most grants one script call hands out (bounds the script's run time).
    max_grants: int = 256
    # Weighted fair share between tenants backlogged on one model (missing: weight 1). Read per
    # waiter: a ``TenantWeights`` here may be refreshed while the process runs.
    tenant_weights: Mapping[str, float] = field(default_factory=dict)
    prefix: str = DEFAULT_PREFIX

    def weight(self, tenant: str | None) -> float:
        w = float(self.tenant_weights.get(tenant or "", 1.0))
        return w if w > 0 else 1.0

    def configured_for(self, model: str) -> ModelLimits | None:
        return _longest_prefix(self.configured, model)

    def default_for(self, model: str) -> ModelLimits:
        found = _longest_prefix(self.defaults, model)
        tpm = (found.tpm if found else None) or self.fallback.tpm
        rpm = (found.rpm if found else None) or self.fallback.rpm
        return ModelLimits(tpm, rpm, found.ipm if found else None)

    @classmethod
    def from_json(cls, text: str, **kwargs: Any) -> LimitsConfig:
        return cls(configured=_parse_table(json.loads(text), "model limits"), **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LimitsConfig:
        """``limits_file`` first, then ``model_limits`` on top (the env wins per model); tenant
        weights from ``IMGQ_TENANT_WEIGHTS``."""
        kwargs.setdefault("tenant_weights", dict(settings.tenant_weights))
        table: dict[str, ModelLimits] = {}
        if settings.limits_file is not None:
            text = Path(settings.limits_file).read_text(encoding="utf-8")
            table.update(_parse_table(json.loads(text), str(settings.limits_file)))
        if settings.model_limits:
            table.update(_parse_table(json.loads(settings.model_limits), "IMGQ_MODEL_LIMITS"))
        return cls(configured=table, **kwargs)
