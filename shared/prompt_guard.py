"""Refuse prompts that carry an image as text: a pasted data URL or base64 blob bills ~100k tokens.

>>> check_prompt("Describe the image.")
>>> check_prompt("Look: data:image/png;base64,iVBORw0KGgo=")
Traceback (most recent call last):
...
shared.errors.PromptContainsImageError: the prompt contains a data URL (data:image/...;base64,...): pass images as images, not text; pasted as text it is billed as ~100k tokens
"""

from __future__ import annotations

import re

from shared.errors import PromptContainsImageError

_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
# A long unbroken base64 run: no prose has 512 such characters in a row.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{512,}={0,2}")


# Long prompts are scanned in windows: each regex call holds the GIL, so a caller running this on
# a thread lets the event loop in between windows (~60 ms per MiB in one call otherwise). The
# overlap is longer than any match needs, so a match across a window boundary is still found.
_WINDOW = 64 * 1024
_OVERLAP = 1024


def _windows(text: str) -> list[str]:
    if len(text) <= _WINDOW + _OVERLAP:
        return [text]
    return [text[i : i + _WINDOW + _OVERLAP] for i in range(0, len(text), _WINDOW)]


def check_prompt(prompt: str) -> None:
    windows = _windows(prompt)
    if any(_DATA_URL.search(w) for w in windows):
        raise PromptContainsImageError(
            "the prompt contains a data URL (data:image/...;base64,...): pass images as images,"
            " not text; pasted as text it is billed as ~100k tokens"
        )
    if any(_BASE64_RUN.search(w) for w in windows):
        raise PromptContainsImageError(
            "the prompt contains a long base64 blob: pass images as images, not text;"
            " pasted as text it is billed as ~100k tokens"
        )
