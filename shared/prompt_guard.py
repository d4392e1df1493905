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


def check_prompt(prompt: str) -> None:
    if _DATA_URL.search(prompt):
        raise PromptContainsImageError(
            "the prompt contains a data URL (data:image/...;base64,...): pass images as images,"
            " not text; pasted as text it is billed as ~100k tokens"
        )
    if _BASE64_RUN.search(prompt):
        raise PromptContainsImageError(
            "the prompt contains a long base64 blob: pass images as images, not text;"
            " pasted as text it is billed as ~100k tokens"
        )
