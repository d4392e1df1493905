"""Deterministic answers that prove which image was analysed, and their completion tokens.

Per image a line ``IMAGE sha256=<16 hex> size=<W>x<H> tokens=<N>`` and a short description.
With a JSON schema the answer is JSON valid against it. Completion tokens are counted with
tiktoken and never exceed the request's output budget: longer answers are cut to it and finish
with ``"length"``.

>>> from simulator.images import ImageInfo
>>> info = ImageInfo("0123456789abcdef", 64, 32, "PNG", "red", "#ff0000", 100)
>>> print(answer_text([(info, 85)]))
IMAGE sha256=0123456789abcdef size=64x32 tokens=85
A landscape PNG image, mostly red (#ff0000).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.text_tokens import count_tokens, encoding
from simulator.images import ImageInfo
from simulator.schema_answer import Facts, from_schema


@dataclass(frozen=True)
class Answer:
    text: str
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


def image_line(info: ImageInfo, tokens: int) -> str:
    return f"IMAGE sha256={info.sha16} size={info.width}x{info.height} tokens={tokens}"


def answer_text(images: list[tuple[ImageInfo, int]]) -> str:
    if not images:
        return "No image was provided."
    lines: list[str] = []
    for info, tokens in images:
        lines.append(image_line(info, tokens))
        lines.append(
            f"A {info.orientation} {info.format} image, mostly {info.colour} ({info.rgb_hex})."
        )
    return "\n".join(lines)


def _facts(images: list[tuple[ImageInfo, int]], text: str) -> Facts:
    if not images:
        return Facts(text=text)
    info, tokens = images[0]
    return Facts(
        text=text,
        sha256=info.sha16,
        colour=info.colour,
        orientation=info.orientation,
        width=info.width,
        height=info.height,
        tokens=tokens,
        images=len(images),
    )


def build_answer(
    images: list[tuple[ImageInfo, int]],
    fmt: tuple[str, dict[str, Any] | None] | None,
    max_output: int,
) -> Answer:
    """The answer for ``images`` in the requested format, cut to ``max_output`` tokens."""
    text = answer_text(images)
    if fmt is not None and fmt[0] == "json_schema":
        text = json.dumps(from_schema(fmt[1] or {}, _facts(images, text)), ensure_ascii=False)
    elif fmt is not None:
        text = json.dumps({"description": text})
    tokens = count_tokens(text)
    if tokens <= max_output:
        return Answer(text, tokens, "stop")
    enc = encoding()
    cut = enc.decode(enc.encode(text, disallowed_special=())[:max_output])
    return Answer(cut, max_output, "length")
