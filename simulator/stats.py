"""What the simulator saw since start or the last reset, served as JSON at ``GET /_sim/stats``.

Admissions are kept as (time, tokens) pairs so the busiest 60-second window is exact, not
bucketed. ``max_tokens_in_any_60s`` shows how well a client-side limiter held the TPM; note that
the simulator's own buckets start full, so they admit up to 2 x TPM within a 60 s window.

>>> s = Stats(now=0.0, wall=0.0)
>>> s.admitted("gpt-4o", 100, 0.5); s.admitted("gpt-4o", 50, 61.0)
>>> snap = s.snapshot(now=62.0)
>>> snap["admitted_tokens_per_second"][:2], snap["max_tokens_in_any_60s"]
([100, 0], 100)
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any


def _max_in_window(times: array[float], amounts: array[float], window: float) -> float:
    best = total = 0.0
    lo = 0
    for hi in range(len(times)):
        total += amounts[hi]
        while times[hi] - times[lo] >= window:
            total -= amounts[lo]
            lo += 1
        best = max(best, total)
    return best


class Stats:
    """Counters of one run; single-threaded (the event loop), so no locks."""

    def __init__(self, now: float, wall: float) -> None:
        self.in_flight = 0
        self.reset(now, wall)

    def reset(self, now: float, wall: float) -> None:
        """Forget everything but the requests still in flight (they will leave later)."""
        self.t0 = now
        self.started_at = wall
        self.statuses: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.image_hashes: Counter[str] = Counter()
        self.admitted_hashes: Counter[str] = Counter()  # per image: calls admitted (paid)
        self.by_model: dict[str, Counter[str]] = {}
        self._times: array[float] = array("d")
        self._tokens: array[float] = array("d")
        self.admitted_tokens = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.images = 0
        self.completed = 0
        self.peak_in_flight = self.in_flight

    def enter(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def answered(self, status: int, code: str | None = None) -> None:
        self.statuses[str(status)] += 1
        if code:
            self.codes[code] += 1

    def admitted(self, model: str, tokens: int, now: float) -> None:
        self._times.append(now - self.t0)
        self._tokens.append(tokens)
        self.admitted_tokens += tokens
        per_model = self.by_model.setdefault(model, Counter())
        per_model["admitted_requests"] += 1
        per_model["admitted_tokens"] += tokens

    def completed_one(self, prompt: int, completion: int) -> None:
        self.completed += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion

    def admitted_image(self, sha16: str) -> None:
        self.admitted_hashes[sha16] += 1

    def saw_image(self, sha16: str) -> None:
        self.images += 1
        self.image_hashes[sha16] += 1

    def snapshot(self, now: float) -> dict[str, Any]:
        elapsed = max(0.0, now - self.t0)
        seconds = int(elapsed) + 1
        tokens_ps = [0] * seconds
        requests_ps = [0] * seconds
        for t, n in zip(self._times, self._tokens, strict=True):
            i = min(int(t), seconds - 1)
            tokens_ps[i] += int(n)
            requests_ps[i] += 1
        ones = array("d", [1.0]) * len(self._times)
        return {
            "requests": dict(self.statuses),
            "codes": dict(self.codes),
            "faults": dict(self.faults),
            "admitted_requests": len(self._times),
            "admitted_tokens": self.admitted_tokens,
            "admitted_tokens_per_second": tokens_ps,
            "admitted_requests_per_second": requests_ps,
            "max_tokens_in_any_60s": int(_max_in_window(self._times, self._tokens, 60.0)),
            "max_requests_in_any_60s": int(_max_in_window(self._times, ones, 60.0)),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "images": self.images,
            "image_hashes": dict(self.image_hashes),
            "admitted_hashes": dict(self.admitted_hashes),
            "by_model": {m: dict(c) for m, c in self.by_model.items()},
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "completed": self.completed,
            "started_at": self.started_at,
            "elapsed_s": round(elapsed, 3),
        }
