"""A streaming call (a job submitted with ``stream``, issue 11): the answer read as it comes.

The request is the non-streaming one plus ``stream: true`` (chat also asks
``stream_options.include_usage``, so its last chunk carries the usage); the outcome is the same
``ApiOutcome`` — text, prompt and completion tokens, latency, headers — so the Result, the
limiter's settle and the cost are exactly those of a non-streaming call. Each text fragment goes
to ``on_delta`` as it arrives (``stream_job_call``: a ``shared.job_stream.DeltaPublisher``).

Errors are the non-streaming ones: an error answer is mapped by ``map_status_error``; a stream
that breaks or ends before the model finished (no ``[DONE]``, no ``response.completed``) is an
``UpstreamConnectionError``, an error event inside it an ``UpstreamServerError`` — retryable
like a dropped non-streaming call. The whole stream shares one deadline, not each read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, cast

import httpx2
import openai

from shared import errors
from shared.job_stream import DeltaPublisher
from shared.jobs import Job
from workers.deps import WorkerDeps
from workers.openai_call import (
    ApiOutcome,
    HeadersHook,
    ImagePart,
    _read_answer,
    build_chat_request,
    build_responses_request,
    map_status_error,
    responses_output_text,
    timeout_error,
)

DeltaHook = Callable[[str], None]
# One event holds at most the whole answer (response.completed repeats it): well over 1 MiB for
# a long answer, so httpx2's default cap would break good streams.
MAX_EVENT_BYTES = 32 * 1024 * 1024


class _Answer:
    """What the events said so far: the text fragments and the usage."""

    def __init__(self, on_delta: DeltaHook) -> None:
        self.parts: list[str] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._on_delta = on_delta

    def text(self, fragment: Any) -> None:
        if isinstance(fragment, str) and fragment:
            self.parts.append(fragment)
            self._on_delta(fragment)

    def chat_event(self, data: str) -> bool:
        """Read one chat chunk; True at ``[DONE]``."""
        if data.startswith("[DONE]"):
            return True
        obj = _json(data)
        if obj.get("error"):
            raise _stream_error(obj["error"])
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:  # we ask for one
                self.text((choice.get("delta") or {}).get("content"))
        usage = obj.get("usage")
        if isinstance(usage, dict):  # the last chunk, with stream_options.include_usage
            self.prompt_tokens = int(usage.get("prompt_tokens", 0))
            self.completion_tokens = int(usage.get("completion_tokens", 0))
        return False

    def responses_event(self, data: str) -> bool:
        """Read one Responses API event; True at ``response.completed`` (or ``.incomplete``:
        cut at max_output_tokens, answered like the non-streaming call answers it)."""
        obj = _json(data)
        kind = obj.get("type")
        if kind == "response.output_text.delta":
            self.text(obj.get("delta"))
        elif kind in ("response.completed", "response.incomplete"):
            response = obj.get("response") or {}
            usage = response.get("usage") or {}
            self.prompt_tokens = int(usage.get("input_tokens", 0))
            self.completion_tokens = int(usage.get("output_tokens", 0))
            if not self.parts:  # a server that sent no deltas: the final object has the text
                self.text(responses_output_text(response))
            return True
        elif kind == "response.failed":
            raise _stream_error((obj.get("response") or {}).get("error") or {})
        elif kind == "error":
            raise _stream_error(obj)
        return False


def _json(data: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise errors.UpstreamServerError(f"the API streamed a malformed event: {exc}") from None
    if not isinstance(obj, dict):
        raise errors.UpstreamServerError("the API streamed an event that is not an object")
    return obj


def _stream_error(err: Any) -> errors.ImgqError:
    err = err if isinstance(err, dict) else {}
    code, message = err.get("code") or "error", err.get("message") or "no message"
    return errors.UpstreamServerError(f"the API failed mid-stream: {code}: {message}"[:500])


async def _read_stream(api: str, raw: httpx2.Response, on_delta: DeltaHook) -> _Answer:
    answer = _Answer(on_delta)
    if not raw.headers.get("content-type", "").startswith("text/event-stream"):
        # An OpenAI-compatible server that ignores `stream` answers with the whole document.
        text, answer.prompt_tokens, answer.completion_tokens = _read_answer(api, await raw.aread())
        answer.text(text)
        return answer
    read = answer.chat_event if api == "chat" else answer.responses_event
    # An async generator (typed as an iterator): closed at once when we stop early.
    events = cast(
        AsyncGenerator[httpx2.ServerSentEvent, None],
        httpx2.EventSource(raw, max_event_size=MAX_EVENT_BYTES).__aiter__(),
    )
    async with contextlib.aclosing(events):
        async for sse in events:
            if read(sse.data):
                return answer
    raise errors.UpstreamConnectionError("the API's stream ended before the answer was complete")


async def call_openai_stream(
    client: openai.AsyncOpenAI,
    *,
    api: str,
    model: str,
    prompt: str,
    images: Sequence[ImagePart],
    max_output_tokens: int,
    json_schema: dict[str, Any] | None = None,
    timeout: float,
    on_headers: HeadersHook | None = None,
    on_delta: DeltaHook,
) -> ApiOutcome:
    """``call_openai`` streaming; ``on_delta`` sees each text fragment (never raises into us:
    it is synchronous and must not fail). Raises a typed ImgqError."""
    builder = build_chat_request if api == "chat" else build_responses_request
    request = builder(model, prompt, images, max_output_tokens, json_schema)
    request["stream"] = True
    if api == "chat":
        request["stream_options"] = {"include_usage": True}  # the last chunk: the usage
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):  # the whole stream, not each read
            raw = await client.post(
                "/chat/completions" if api == "chat" else "/responses",
                cast_to=httpx2.Response,
                body=request,
                options={"timeout": timeout},
                stream=True,  # the body is left unread: we read it event by event
                stream_cls=None,
            )
            try:
                headers = raw.headers
                if on_headers is not None:  # before the body: a broken stream's release has them
                    await on_headers(headers)
                answer = await _read_stream(api, raw, on_delta)
            finally:
                await raw.aclose()
    except openai.APIStatusError as exc:
        if on_headers is not None:
            await on_headers(exc.response.headers)
        raise map_status_error(exc) from None
    except TimeoutError:
        raise errors.UpstreamTimeoutError(
            f"the answer did not finish within {timeout:g}s"
        ) from None
    except (openai.APITimeoutError, httpx2.TimeoutException) as exc:
        raise timeout_error(exc, started, timeout) from None
    except (openai.APIConnectionError, httpx2.TransportError) as exc:
        raise errors.UpstreamConnectionError(f"connection to the API failed: {exc}") from None
    latency = time.perf_counter() - started
    text = "".join(answer.parts)
    return ApiOutcome(text, answer.prompt_tokens, answer.completion_tokens, latency, headers)


def job_call_args(deps: WorkerDeps, job: Job, images: Sequence[ImagePart]) -> dict[str, Any]:
    """The call's arguments from the job, streamed or not (``call_openai``'s keywords)."""
    return {
        "api": job.api,
        "model": job.model,
        "prompt": job.prompt,
        "images": images,
        "max_output_tokens": job.max_output_tokens,
        "json_schema": job.json_schema,
        "timeout": deps.settings.request_timeout_seconds,
    }


async def stream_job_call(
    deps: WorkerDeps,
    job: Job,
    images: Sequence[ImagePart],
    attempt: int,
    on_headers: HeadersHook | None,
) -> ApiOutcome:
    """One attempt of a streaming job: the call, its text published as it comes (best effort:
    a failed publish never fails the job). A failed attempt's unsent text is dropped; the next
    attempt publishes from offset 0 again."""
    publisher = DeltaPublisher(deps.redis, job.job_id, attempt)
    try:
        outcome = await call_openai_stream(
            deps.client,
            **job_call_args(deps, job, images),
            on_headers=on_headers,
            on_delta=publisher.add,
        )
    except BaseException:
        publisher.abort()
        raise
    await publisher.close()
    return outcome
