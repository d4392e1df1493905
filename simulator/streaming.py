"""Streamed answers (``stream: true``) of both APIs, paced and faulted like a real stream.

The chunks are ``simulator.render``'s (chat: ``chat.completion.chunk`` lines, with a last
usage chunk when ``stream_options.include_usage``; responses: the typed ``response.*`` events
through ``response.completed``). ``--stream-chunk-ms`` pauses between chunks so a client sees
the text arrive over time; ``--stream-cut-rate`` drops the connection halfway through, after
the headers and part of the text, as a broken stream looks to a client. Like OpenAI's, text
chunks carry an ``obfuscation`` padding field unless ``stream_options.include_obfuscation`` is
false.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from simulator import render
from simulator.answers import Answer
from simulator.payload import Prompt
from simulator.state import STATE


async def stream_answer(
    request: web.Request,
    api: str,
    prompt: Prompt,
    body: dict[str, Any],
    answer: Answer,
    n_prompt: int,
    headers: dict[str, str],
) -> web.StreamResponse | None:
    """The streamed answer, or None when it was cut (the caller drops the connection)."""
    state = request.app[STATE]
    cfg = state.config
    # Drawn only when cuts are on, so a seed replays the same sequence as before otherwise.
    cut = cfg.stream_cut_rate > 0 and state.rng.random() < cfg.stream_cut_rate
    resp = web.StreamResponse(
        headers={
            **headers,
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
        }
    )
    await resp.prepare(request)
    options = body.get("stream_options")
    obfuscate = not (isinstance(options, dict) and options.get("include_obfuscation") is False)
    if api == "chat":
        rid = f"chatcmpl-{state.next_id()}"
        chunks = list(
            render.chat_chunks(rid, prompt.model, answer, n_prompt, prompt.include_usage, obfuscate)
        )
    else:
        rid = f"resp_{state.next_id()}"
        chunks = list(render.response_events(rid, prompt.model, answer, n_prompt, body, obfuscate))
    if cut:
        chunks = chunks[: max(1, len(chunks) // 2)]
    pause = cfg.stream_chunk_ms / 1000
    if pause > 0:
        for i, chunk in enumerate(chunks):
            if i:
                await asyncio.sleep(pause)
            await resp.write(chunk)
    else:
        await resp.write(b"".join(chunks))
    if cut:
        state.stats.faults["stream_cut"] += 1
        return None
    await resp.write_eof()
    return resp
