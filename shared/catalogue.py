"""The one model catalogue: vision rule, prices, default limits, context window, capabilities.

One lookup for every part of imgq (admission, workers, limiter, metrics, estimates, simulator).
A name matches its own entry, or the entry it is a dated snapshot of: ``gpt-4o-2024-08-06`` is
``gpt-4o`` (the catalogued name followed by ``-YYYY-MM-DD`` or ``-MMDD``). Any other suffix is a
different model (``o1-pro`` is not priced as ``o1``), unknown unless configured.

The canonical name (the entry's name, or ``"unknown"``) is the only model name that becomes a
limiter key or a metric label, so a caller inventing names never creates keys or label values.

>>> cat = builtin_catalogue()
>>> cat.canonical("gpt-4o-2024-08-06"), cat.canonical("gpt-4o-mini"), cat.canonical("o1-pro")
('gpt-4o', 'gpt-4o-mini', 'unknown')
>>> cat.cost_usd("gpt-4o", 765, 0)
0.0019125
>>> cat.cost_usd("gpt-4o", 765, 0, batch=True)
0.00095625
>>> cat.cost_usd("my-llava", 765, 10) is None
True
>>> cat.spec("gpt-4.1-mini").vision
VisionRule(kind='patch', base=0, tile=0, multiplier=1.62)
>>> cat.spec("gpt-image-1").limits.ipm
5

**Unknown models** (``IMGQ_UNKNOWN_MODELS``): ``accept`` (default) runs them with the documented
defaults of ``UNKNOWN`` below (gpt-4o's tile rule to size images, 30,000 TPM / 500 RPM shared by
all unknown names under the one key ``unknown``, context and output length not checked) and a
null ``cost_usd``; ``refuse`` fails them at submit with ``model_not_found``, before any call.

**Operators' file** (``IMGQ_MODELS_FILE``): a JSON object ``{name: entry}``; an entry overrides
fields of the built-in entry of the same name, or adds a model (starting from ``like``'s facts,
or from the unknown defaults). Every field is optional::

    {
      "llava-v1.6": {
        "like": "gpt-4o",
        "capabilities": ["vision", "chat"],
        "vision": {"kind": "tile", "base": 85, "tile": 170},
        "prices": {"input": 0.2, "cached_input": 0.1, "output": 0.6, "batch_discount": 0.5},
        "limits": {"tpm": 100000, "rpm": 600},
        "context_window": 32768,
        "max_output_tokens": 4096
      },
      "gpt-4o": {"limits": {"tpm": 800000, "rpm": 5000}}
    }

A name given limits in ``IMGQ_MODEL_LIMITS`` / ``IMGQ_LIMITS_FILE`` is configured too: it keeps
its own limiter key, with the unknown-model defaults otherwise. ``prices: null`` leaves
``cost_usd`` null; ``vision`` may be ``{"kind": "patch", "multiplier":
1.62}``; ``limits`` are merged field by field (``tpm``, ``rpm``, ``ipm``). Names: 1-128 characters
of letters, digits and ``._:/@+-``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from shared.catalogue_types import (
    ALL_TEXT,
    CAPABILITIES,
    Capability,
    ModelSpec,
    TierLimits,
    TokenPrices,
    VisionRule,
)
from shared.errors import NotFoundError

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = [
    "UNKNOWN",
    "UNKNOWN_NAME",
    "UNKNOWN_VISION",
    "Catalogue",
    "CatalogueError",
    "ModelSpec",
    "UnknownPolicy",
    "builtin_catalogue",
    "canonical_model",
    "catalogue_for",
    "default_catalogue",
    "load_catalogue",
]

UnknownPolicy = Literal["accept", "refuse"]
UNKNOWN_NAME = "unknown"
MAX_NAME_LEN = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")
_ENTRY_FIELDS = frozenset(
    {"like", "capabilities", "vision", "prices", "limits", "context_window", "max_output_tokens"}
)

# The documented defaults for a model neither catalogued nor configured (accept policy).
UNKNOWN_VISION = VisionRule("tile", 85, 170)  # gpt-4o's rule
UNKNOWN = ModelSpec(
    name=UNKNOWN_NAME,
    capabilities=ALL_TEXT,
    limits=TierLimits(tpm=30_000, rpm=500),
    vision=UNKNOWN_VISION,
    known=False,
)


class CatalogueError(ValueError):
    """The operators' models file is unreadable or malformed (the message says where)."""


class Catalogue:
    """An immutable set of model entries with one lookup."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._by_name = {s.name: s for s in specs}

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def find(self, model: str) -> ModelSpec | None:
        """The entry for ``model`` (its own, or the one it is a dated snapshot of), or None."""
        if not isinstance(model, str) or len(model) > MAX_NAME_LEN + 11:
            return None
        spec = self._by_name.get(model)
        if spec is None and (m := _SNAPSHOT.search(model)) is not None:
            spec = self._by_name.get(model[: m.start()])
        return spec

    def spec(self, model: str) -> ModelSpec:
        """The entry for ``model``, or the unknown-model defaults."""
        return self.find(model) or UNKNOWN

    def canonical(self, model: str) -> str:
        """The bounded name for keys and labels: the entry's name, or ``"unknown"``."""
        return self.spec(model).name

    def resolve(self, model: str, policy: UnknownPolicy) -> ModelSpec:
        """The entry for ``model`` under ``policy``; refuse raises ``NotFoundError`` (model_not_found)."""
        spec = self.find(model)
        if spec is not None:
            return spec
        if policy == "refuse":
            shown = model if len(model) <= 80 else model[:80] + "..."
            raise NotFoundError(
                f"the model {shown!r} is not in imgq's model catalogue and unknown models are"
                " refused here (IMGQ_UNKNOWN_MODELS=refuse): add it to IMGQ_MODELS_FILE"
            )
        return UNKNOWN

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_input_tokens: int = 0,
        batch: bool = False,
    ) -> float | None:
        """USD for a call, or None when the model has no token prices. Never raises."""
        prices = self.spec(model).prices
        if prices is None:
            return None
        return prices.cost_usd(
            input_tokens, output_tokens, cached_input_tokens=cached_input_tokens, batch=batch
        )

    def with_entries(self, raw: Any, source: str) -> Catalogue:
        """A new catalogue with the operators' entries (the file format above) applied."""
        if not isinstance(raw, dict):
            raise CatalogueError(f"{source}: expected a JSON object {{model name: entry}}")
        table = dict(self._by_name)
        for name, entry in raw.items():
            table[name] = _parse_entry(name, entry, table, f"{source}: model {name!r}")
        return Catalogue(table.values())


def _parse_entry(name: object, entry: object, table: dict[str, ModelSpec], where: str) -> ModelSpec:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == UNKNOWN_NAME:
        raise CatalogueError(f"{where}: names are 1-128 of [A-Za-z0-9._:/@+-] (not 'unknown')")
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where}: expected an object")
    extra = set(entry) - _ENTRY_FIELDS
    if extra:
        raise CatalogueError(f"{where}: unknown fields {sorted(extra)}")
    like = entry.get("like")
    if like is not None and like not in table:
        raise CatalogueError(f"{where}: 'like' names {like!r}, which is not catalogued")
    base = table[like] if like is not None else table.get(name) or replace(UNKNOWN, known=True)
    try:
        spec = replace(
            base,
            name=name,
            known=True,
            capabilities=_capabilities(entry.get("capabilities"), base.capabilities),
            vision=_vision(entry["vision"]) if "vision" in entry else base.vision,
            prices=_prices(entry["prices"]) if "prices" in entry else base.prices,
            limits=replace(base.limits, **_limits(entry.get("limits") or {})),
            context_window=_positive(entry, "context_window", base.context_window),
            max_output_tokens=_positive(entry, "max_output_tokens", base.max_output_tokens),
        )
    except (TypeError, ValueError) as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    if spec.supports("vision") and spec.vision is None:
        raise CatalogueError(f"{where}: the 'vision' capability needs a vision rule")
    return spec


def _capabilities(raw: object, default: frozenset[Capability]) -> frozenset[Capability]:
    if raw is None:
        return default
    if not isinstance(raw, list) or not set(raw) <= CAPABILITIES:
        raise ValueError(f"capabilities must be a list of {sorted(CAPABILITIES)}")
    return frozenset(cast("list[Capability]", raw))


def _vision(raw: object) -> VisionRule | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("vision must be an object {kind, base, tile, multiplier} or null")
    return VisionRule(**raw)


def _prices(raw: object) -> TokenPrices | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("prices must be an object {input, output, cached_input, ...} or null")
    return TokenPrices(**raw)


def _limits(raw: object) -> dict[str, int | None]:
    if not isinstance(raw, dict) or not set(raw) <= {"tpm", "rpm", "ipm"}:
        raise ValueError("limits must be an object with 'tpm', 'rpm' and/or 'ipm'")
    return dict(raw)


def _positive(entry: dict[str, Any], key: str, default: int | None) -> int | None:
    if key not in entry:
        return default
    v = entry[key]
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
        raise ValueError(f"{key} must be a positive integer or null, got {v!r}")
    return v  # type: ignore[no-any-return]


@functools.cache
def builtin_catalogue() -> Catalogue:
    """The built-in entries only (no operators' file)."""
    from shared.catalogue_data import builtin_models

    return Catalogue(builtin_models())


@functools.lru_cache(maxsize=8)
def load_catalogue(models_file: Path | None = None) -> Catalogue:
    """The built-in catalogue with ``models_file`` applied; loaded once per path."""
    if models_file is None:
        return builtin_catalogue()
    try:
        raw = json.loads(Path(models_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"IMGQ_MODELS_FILE {str(models_file)!r}: {exc}") from None
    return builtin_catalogue().with_entries(raw, str(models_file))


def catalogue_for(settings: Settings) -> Catalogue:
    """The catalogue of ``settings``: built-in, ``IMGQ_MODELS_FILE``, then names given limits in
    ``IMGQ_MODEL_LIMITS`` / ``IMGQ_LIMITS_FILE`` (configured models: unknown defaults, own key).
    """
    return _with_limit_names(settings.models_file, settings.model_limits, settings.limits_file)


@functools.lru_cache(maxsize=8)
def _with_limit_names(
    models_file: Path | None, model_limits: str | None, limits_file: Path | None
) -> Catalogue:
    cat = load_catalogue(models_file)
    names: set[str] = set()
    for source in (model_limits, _read(limits_file)):
        try:
            doc = json.loads(source) if source else {}
        except ValueError:
            continue  # malformed: the limiter reports it, with the file's name
        if isinstance(doc, dict):
            names.update(n for n in doc if isinstance(n, str) and _NAME.fullmatch(n))
    extra = [replace(UNKNOWN, name=n, known=True) for n in sorted(names) if cat.find(n) is None]
    extra = [s for s in extra if s.name != UNKNOWN_NAME]
    return Catalogue([*(cat.spec(n) for n in cat.names), *extra]) if extra else cat


def _read(path: Path | None) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8") if path is not None else None
    except OSError:
        return None


@functools.cache
def default_catalogue() -> Catalogue:
    """The process's catalogue, from its settings (``IMGQ_MODELS_FILE``)."""
    from shared.settings import Settings

    return catalogue_for(Settings())


def canonical_model(model: str) -> str:
    """``default_catalogue().canonical(model)``: the bounded key/label name of ``model``."""
    return default_catalogue().canonical(model)
