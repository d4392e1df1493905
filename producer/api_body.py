"""Reading a submit body (JSON or multipart) into a ``SubmitRequest``, within a size and a time.

The size: aiohttp's ``client_max_size`` caps a JSON body and each multipart part; the sum of the
parts is counted here. The time: ``read_submit`` gives the whole body ``timeout`` seconds, so a
body trickled a byte at a time cannot hold a connection (and its buffers) for minutes.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from producer.client import ImageInput, SubmitRequest

_FIELDS = ("prompt", "model", "detail", "api", "max_output_tokens", "priority", "job_id",
           "max_image_tokens", "dedup", "json_schema", "metadata", "route",
           "callback_url", "stream", "deadline_seconds")  # fmt: skip


class BodyTimeoutError(Exception):
    """The request body did not arrive within the time allowed."""


async def read_submit(request: web.Request, *, max_body: int, timeout: float) -> SubmitRequest:
    """Parse the body; ``BodyTimeoutError`` after ``timeout`` s, ``ValueError`` on bad input."""
    try:
        async with asyncio.timeout(timeout):
            return await parse_submit(request, max_body)
    except TimeoutError:
        raise BodyTimeoutError(
            f"the request body did not arrive within {timeout:g} s (send it at once)"
        ) from None


def _image_from_json(item: Any) -> ImageInput:
    if isinstance(item, str):
        return ImageInput(item)
    if not isinstance(item, dict):
        raise ValueError("each image is a string (URL, data URL, base64) or an object")
    value = item.get("url") or item.get("data") or item.get("base64")
    if not isinstance(value, str):
        raise ValueError("an image object needs `url`, `data` or `base64`")
    return ImageInput(value, item.get("detail"))


def _integer(name: str, value: Any) -> int:
    # JSON gives ints, forms give digit strings; 1.5 or true are mistakes, not 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(f"`{name}` must be a whole number, got {value!r}")


def _seconds(name: str, value: Any) -> float:
    # JSON gives numbers, forms give text; a bool, 0, a negative, NaN or infinity is a mistake.
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        seconds = float(value)
    except (ValueError, OverflowError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"`{name}` must be a positive number of seconds, got {value!r}"[:200])
    return seconds


def _boolean(name: str, value: Any) -> bool:
    # JSON gives true/false, forms give text; a number or "maybe" is a mistake, not a choice.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"`{name}` must be true or false, got {value!r}"[:200])


def _request_from(fields: dict[str, Any], images: list[ImageInput]) -> SubmitRequest:
    unknown = set(fields) - set(_FIELDS) - {"images"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    opts = {k: fields[k] for k in _FIELDS if fields.get(k) is not None}
    if "prompt" not in opts:
        raise ValueError("`prompt` is required")
    for k in ("prompt", "model", "detail", "api", "priority", "job_id", "route", "callback_url"):
        if k in opts and not isinstance(opts[k], str):
            raise ValueError(f"`{k}` must be a string")
    for k in ("max_output_tokens", "max_image_tokens"):
        if k in opts:
            opts[k] = _integer(k, opts[k])
    if isinstance(opts.get("dedup"), str):
        opts["dedup"] = opts["dedup"].lower() not in ("0", "false", "no")
    if "stream" in opts:
        opts["stream"] = _boolean("stream", opts["stream"])
    if "deadline_seconds" in opts:  # the client caps it (image TTL) as it does its own callers'
        opts["deadline_seconds"] = _seconds("deadline_seconds", opts["deadline_seconds"])
    for k in ("json_schema", "metadata"):
        if isinstance(opts.get(k), str):
            opts[k] = json.loads(opts[k])
    return SubmitRequest(images=images, **opts)


async def form_parts(
    request: web.Request, max_body: int
) -> AsyncIterator[tuple[BodyPartReader, bytes]]:
    """Each part of a multipart body with its bytes; 413 once their sum passes ``max_body``."""
    # aiohttp caps each part, not their sum: count the total ourselves.
    total = 0
    reader = await request.multipart()
    parts = aiter(reader)
    while True:
        try:  # a part whose headers do not parse is the caller's error, not ours (not a 500)
            part = await anext(parts)
        except StopAsyncIteration:
            return
        except HttpProcessingError as exc:
            raise ValueError(f"a part of the multipart body is malformed: {exc.message}") from exc
        if not isinstance(part, BodyPartReader):
            continue
        try:
            data = bytes(await part.read(decode=True))
        except RuntimeError as exc:  # aiohttp: an unknown Content-(Transfer-)Encoding
            raise ValueError(f"a part of the multipart body cannot be decoded: {exc}") from exc
        total += len(data)
        if total > max_body:
            raise web.HTTPRequestEntityTooLarge(max_size=max_body, actual_size=total)
        yield part, data


def form_text(part: BodyPartReader, data: bytes) -> str:
    """A form field's value, decoded with the charset its part declares (UTF-8 by default)."""
    return data.decode(part.get_charset(default="utf-8"))


async def parse_submit(request: web.Request, max_body: int) -> SubmitRequest:
    if request.content_type == "multipart/form-data":
        fields: dict[str, Any] = {}
        images: list[ImageInput] = []
        async for part, data in form_parts(request, max_body):
            if part.filename is not None or part.name == "image":
                images.append(ImageInput(data))
            elif part.name:
                fields[part.name] = form_text(part, data)
        return _request_from(fields, images)
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    raw_images = body.get("images") or []
    if not isinstance(raw_images, list):
        raise ValueError("`images` must be a list")
    images = [_image_from_json(i) for i in raw_images]
    return _request_from(body, images)
