"""OpenAI's duration format for `x-ratelimit-reset-*` headers and "try again in" messages.

>>> [format_duration(s) for s in (360, 1, 0.12, 0.017, 8.64, 90.5, 3723)]
['6m0s', '1s', '120ms', '17ms', '8.64s', '1m30.5s', '1h2m3s']
>>> parse_duration("6m0s"), parse_duration("120ms"), parse_duration("1h2m3.5s")
(360.0, 0.12, 3723.5)
"""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _num(x: float) -> str:
    # At most 3 decimals, no trailing zeros: 1.5 -> "1.5", 2.0 -> "2".
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def format_duration(seconds: float) -> str:
    """Render ``seconds`` like OpenAI does (Go's style): ``6m0s``, ``1s``, ``120ms``."""
    # Round up to whole milliseconds first, so 59.9999 s reads "1m0s", never "60s".
    ms = math.ceil(max(0.0, seconds) * 1000 - 1e-9)
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60.0:
        return f"{_num(seconds)}s"
    hours, rest = divmod(seconds, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    text = f"{int(minutes)}m{_num(secs)}s"
    return f"{int(hours)}h{text}" if hours else text


def parse_duration(text: str) -> float:
    """Seconds in an OpenAI duration string; raises ``ValueError`` on anything else."""
    text = text.strip()
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not an OpenAI duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)
