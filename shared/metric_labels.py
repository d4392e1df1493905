"""Bounded label values for imgq's metrics: the guard, and metric classes that apply it.

A job's ``model`` is caller-supplied: every value past a per-label cap folds into ``"other"``, so
a typo never grows a series (shared/metrics.py builds every metric from these classes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

from prometheus_client import Counter, Gauge, Histogram

OTHER = "other"
DEFAULT_CAPS: Mapping[str, int] = {"model": 32, "code": 64, "outcome": 64}


class LabelGuard:
    """Caps the distinct values of free-form labels: past `caps[label]` values, new ones -> "other".

    >>> g = LabelGuard({"model": 1})
    >>> g("model", "a"), g("model", "b"), g("model", "a"), g("api", "chat")
    ('a', 'other', 'a', 'chat')
    """

    def __init__(
        self,
        caps: Mapping[str, int] = DEFAULT_CAPS,
        max_len: int = 64,
        normalize: Mapping[str, Callable[[str], str]] | None = None,
    ) -> None:
        self._caps = dict(caps)
        # e.g. {"model": canonical_model}: a value mapped to a bounded name before the cap.
        self._normalize = dict(normalize or {})
        self._max_len = max_len
        self._seen: dict[str, set[str]] = {name: set() for name in self._caps}
        self._lock = threading.Lock()

    def __call__(self, label: str, value: object) -> str:
        fn = self._normalize.get(label)
        text = (fn(str(value)) if fn is not None else str(value))[: self._max_len]
        cap = self._caps.get(label)
        if cap is None:
            return text
        seen = self._seen[label]
        if text in seen:
            return text
        with self._lock:
            if text in seen or len(seen) < cap:
                seen.add(text)
                return text
        return OTHER


_MEMO_MAX = 4096  # resolved label sets remembered per metric


class _Guarded:
    """Mixin: `.labels()` runs values through the owning `Metrics`' guard (children have none)."""

    _imgq_guard: LabelGuard | None = None
    _labelnames: tuple[str, ...]

    _imgq_children: dict[tuple[Any, ...], Self] | None = None

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Self:
        # A job touches ~20 labelled series: resolve each (values -> guarded child) once. The memo
        # is bounded; past it, lookups take the full path (the guard still caps the values).
        memo = self._imgq_children
        if memo is None:
            memo = self._imgq_children = {}
        key = (*labelvalues, *labelkwargs.items())
        child = memo.get(key)
        if child is None:
            child = self._guarded_labels(*labelvalues, **labelkwargs)
            if len(memo) < _MEMO_MAX:
                memo[key] = child
        return child

    def _guarded_labels(self, *labelvalues: Any, **labelkwargs: Any) -> Self:
        guard = self._imgq_guard
        if guard is not None:
            if labelkwargs:
                labelkwargs = {k: guard(k, v) for k, v in labelkwargs.items()}
            else:
                labelvalues = tuple(
                    guard(k, v) for k, v in zip(self._labelnames, labelvalues, strict=False)
                )
        return super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc, no-any-return]


class _Counter(_Guarded, Counter):
    pass


class _Gauge(_Guarded, Gauge):
    pass


class _Histogram(_Guarded, Histogram):
    pass


_M = TypeVar("_M", bound=_Guarded)
