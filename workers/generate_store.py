"""Generated images into the image store: bytes (inline or downloaded), checked, stored
content-addressed, described for the result (size, format, sha256, presigned URL on S3)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import time
from typing import Any

import httpx2

from shared import errors
from shared.generation import OutputImage
from workers.deps import WorkerDeps

log = logging.getLogger(__name__)
STORE_FIRST_RETRY_SECONDS = 0.2
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # far above any generated image (a 1792x1024 PNG: ~3 MB)
STORE_MAX_RETRY_SECONDS = 2.0


async def _image_bytes(item: Any, deps: WorkerDeps) -> bytes:
    if item.b64_json:
        return base64.b64decode(item.b64_json)
    if item.url:  # DALL·E with response_format=url: the API's URL expires within the hour
        # The URL comes from the API's answer, not from a caller; still, bytes are capped.
        async with (
            httpx2.AsyncClient(timeout=deps.settings.request_timeout_seconds) as http,
            http.stream("GET", item.url) as resp,
        ):
            resp.raise_for_status()
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > MAX_DOWNLOAD_BYTES:
                    raise errors.UpstreamServerError(
                        f"the API's image URL served more than {MAX_DOWNLOAD_BYTES} bytes"
                    )
            return bytes(data)
    raise errors.UpstreamServerError("the API answered an image with neither b64_json nor url")


def _describe(data: bytes) -> tuple[int, int, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size[0], img.size[1], (img.format or "?")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise errors.UpstreamServerError(f"the API answered an undecodable image: {exc}") from None


async def _store(item: Any, deps: WorkerDeps) -> OutputImage:
    try:
        data = await _image_bytes(item, deps)
    except httpx2.HTTPError as exc:
        raise errors.UpstreamConnectionError(f"could not download the image: {exc}") from None
    width, height, fmt = _describe(data)
    ref = await deps.images.put(data)
    url: str | None = item.url
    presign = getattr(deps.images, "presigned_url", None)
    if presign is not None:
        url = await presign(ref, deps.settings.presigned_url_seconds)
    return OutputImage(
        ref=ref,
        url=url,
        width=width,
        height=height,
        format=fmt.lower(),
        nbytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        revised_prompt=item.revised_prompt,
    )


async def store_outputs(items: list[Any], deps: WorkerDeps) -> list[OutputImage]:
    """Store every output image; retried while storage is down, since the call is already paid
    (puts are content-addressed, so a retry rewrites the same keys)."""
    deadline = time.monotonic() + deps.settings.result_write_retry_seconds
    delay = STORE_FIRST_RETRY_SECONDS
    while True:
        try:
            return [await _store(item, deps) for item in items]
        except errors.StorageUnavailableError:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("storing generated images failed; retrying in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_MAX_RETRY_SECONDS)
