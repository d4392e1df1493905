"""One Batch API input line answered exactly as the online endpoint answers the same body.

Same parsing (simulator/payload.py), image checks and exact billing, same answer text and JSON
shapes (simulator/answers.py, render.py); only the online TPM/RPM buckets are skipped: the Batch
API has its own queue limit (enqueued tokens), checked per batch in simulator/batch_api.py.

>>> url_api("/v1/responses"), url_api("/v1/chat/completions"), url_api("/v1/embeddings")
('responses', 'chat', None)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared.text_tokens import prompt_tokens
from shared.vision_tokens import is_known_model
from simulator import errors, render
from simulator.answers import build_answer
from simulator.images import ImageInfo
from simulator.payload import Api, Prompt, parse_chat, parse_responses
from simulator.state import SimState


def url_api(url: str) -> Api | None:
    """The simulated API behind a batch line's ``url`` (None: not one we answer)."""
    if url == "/v1/chat/completions":
        return "chat"
    if url == "/v1/responses":
        return "responses"
    return None


@dataclass
class LineAnswer:
    status: int
    body: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    image_hashes: tuple[str, ...] = ()


def parse_line_prompt(api: Api, body: dict[str, Any]) -> Prompt:
    return parse_chat(body) if api == "chat" else parse_responses(body)


async def line_prompt_tokens(
    state: SimState, load: LoadImages, api: Api, body: dict[str, Any]
) -> int:
    """Prompt tokens of one line (what the enqueued-token limit counts); 0 if it is invalid."""
    try:
        prompt = parse_line_prompt(api, body)
        images = await load(state, prompt)
    except errors.ApiError:
        return 0
    return prompt_tokens(prompt.texts, [t for _, t in images], messages=prompt.messages)


# The online handler's image loader (simulator/app.py hands it in: no import back up).
LoadImages = Callable[[SimState, Prompt], Awaitable[list[tuple[ImageInfo, int]]]]


async def answer_line(
    state: SimState, load: LoadImages, api: Api, body: dict[str, Any], rid: str
) -> LineAnswer:
    """The (status, body) the online endpoint would give ``body``; errors in OpenAI's shape."""
    try:
        if body.get("stream"):
            raise errors.bad_request("Streaming is not supported in the Batch API.", param="stream")
        prompt = parse_line_prompt(api, body)
        if not is_known_model(prompt.model):
            raise errors.model_not_found(prompt.model)
        images = await load(state, prompt)
    except errors.ApiError as err:
        return LineAnswer(err.status, err.body())
    n_prompt = prompt_tokens(prompt.texts, [t for _, t in images], messages=prompt.messages)
    max_output = prompt.max_output or state.config.default_max_tokens
    answer = build_answer(images, prompt.format, max_output)
    if api == "chat":
        payload = render.chat_completion(f"chatcmpl-{rid}", prompt.model, answer, n_prompt)
    else:
        payload = render.response_object(f"resp_{rid}", prompt.model, answer, n_prompt, body)
    return LineAnswer(
        200,
        payload,
        prompt_tokens=n_prompt,
        completion_tokens=answer.completion_tokens,
        image_hashes=tuple(info.sha16 for info, _ in images),
    )
