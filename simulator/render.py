"""Answer bodies in each API's shape: chat completions, responses, and their SSE streams.

>>> body = chat_completion("chatcmpl-1", "gpt-4o", Answer("hi", 1, "stop"), prompt_tokens=9)
>>> body["usage"]["total_tokens"], body["choices"][0]["message"]["content"]
(10, 'hi')
"""

from __future__ import annotations

import json
import random
import re
import string
import time
from collections.abc import Iterator
from typing import Any

from simulator.answers import Answer

FINGERPRINT = "fp_simulator"
_PAD_CHARS = string.ascii_letters + string.digits
_PAD_RNG = random.Random()  # not the seeded one: padding must not shift a seed's faults
_PIECES = re.compile(r"\S+\s*|\s+")


def pieces(text: str, words: int = 4) -> list[str]:
    """The text in a few deltas of ``words`` words each (joining them gives the text back)."""
    tokens = _PIECES.findall(text)
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)] or [""]


def _chat_usage(prompt_tokens: int, answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(rid: str, model: str, answer: Answer, prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": answer.text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": _chat_usage(prompt_tokens, answer),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def _padding() -> str:
    """An ``obfuscation`` value: random characters that blur the size of each chunk (OpenAI
    adds one to every chunk unless ``stream_options.include_obfuscation`` is false)."""
    return "".join(_PAD_RNG.choices(_PAD_CHARS, k=_PAD_RNG.randint(1, 16)))


def chat_chunks(
    rid: str,
    model: str,
    answer: Answer,
    prompt_tokens: int,
    include_usage: bool,
    obfuscate: bool = False,
) -> Iterator[bytes]:
    """SSE ``data:`` lines of a streamed chat completion, ending with ``[DONE]``."""
    created = int(time.time())
    base = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        pad = {"obfuscation": _padding()} if obfuscate else {}
        return _data({**base, "choices": [choice], **extra, **pad})

    yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
    for piece in pieces(answer.text):
        yield chunk({"content": piece}, None)
    yield chunk({}, answer.finish_reason)
    if include_usage:
        pad = {"obfuscation": _padding()} if obfuscate else {}
        yield _data({**base, "choices": [], "usage": _chat_usage(prompt_tokens, answer), **pad})
    yield b"data: [DONE]\n\n"


def _data(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _message(mid: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": mid,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content if text or status == "completed" else [],
    }


def response_object(
    rid: str, model: str, answer: Answer | None, prompt_tokens: int, request: dict[str, Any]
) -> dict[str, Any]:
    """A ``response`` object; ``answer=None`` gives the in-progress shell used by streams."""
    truncated = answer is not None and answer.finish_reason == "length"
    status = "in_progress" if answer is None else ("incomplete" if truncated else "completed")
    text_cfg = request.get("text") if isinstance(request.get("text"), dict) else None
    out: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": False,
        "temperature": 1.0,
        "text": text_cfg or {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "metadata": {},
    }
    if answer is not None:
        out["output"] = [_message("msg_" + rid[5:], answer.text, status)]
        out["usage"] = responses_usage(prompt_tokens, answer.completion_tokens)
    return out


def responses_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """The ``usage`` object of a Responses API response (a batch object's has the same shape).

    >>> responses_usage(3, 2)["total_tokens"]
    5
    """
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_events(
    rid: str,
    model: str,
    answer: Answer,
    prompt_tokens: int,
    request: dict[str, Any],
    obfuscate: bool = False,
) -> Iterator[bytes]:
    """SSE events of a streamed response, in the order the Responses API sends them."""
    seq = iter(range(1_000_000))
    mid = "msg_" + rid[5:]
    shell = response_object(rid, model, None, prompt_tokens, request)
    final = response_object(rid, model, answer, prompt_tokens, request)
    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}

    def event(kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": next(seq), **fields}
        return f"event: {kind}\n".encode() + _data(payload)

    yield event("response.created", response=shell)
    yield event("response.in_progress", response=shell)
    yield event("response.output_item.added", output_index=0, item=_message(mid, "", "in_progress"))
    yield event("response.content_part.added", **where, part=part)
    for piece in pieces(answer.text):
        pad = {"obfuscation": _padding()} if obfuscate else {}
        yield event("response.output_text.delta", **where, delta=piece, logprobs=[], **pad)
    yield event("response.output_text.done", **where, text=answer.text, logprobs=[])
    yield event("response.content_part.done", **where, part={**part, "text": answer.text})
    yield event("response.output_item.done", output_index=0, item=final["output"][0])
    done = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield event(done, response=final)
