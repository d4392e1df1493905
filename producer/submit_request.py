"""What a producer asks for: ``SubmitRequest`` and its images, and the ``job_id`` rule.

Plain data, no I/O: the API's body parser builds these, the client turns them into jobs
(``producer.job_intake``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import errors
from shared.generation import GenerationOptions, Kind
from shared.jobs import Api, Priority, Route
from shared.redact import redact_source
from shared.tenant_ids import check_job_id, unscope
from shared.vision_tokens import Detail

ImageLike = str | bytes | os.PathLike[str]


def describe_source(value: ImageLike) -> str | None:
    """How a result names an image: short text only, never bytes or a ``data:`` URL.

    >>> describe_source("photos/cat.jpg"), describe_source(b"\\x89PNG"), describe_source("data:x")
    ('photos/cat.jpg', None, None)
    """
    if isinstance(value, bytes):
        return None
    text = os.fspath(value)
    # Echoed in results: never a URL's credentials or (presigned) query string (issue 11).
    return redact_source(text) if len(text) < 2048 and not text.startswith("data:") else None


@dataclass
class ImageInput:
    """An image and the detail to send it at (``None``: the request's default)."""

    source: ImageLike
    detail: Detail | None = None


@dataclass
class SubmitRequest:
    images: Sequence[ImageLike | ImageInput]
    prompt: str
    model: str | None = None
    detail: Detail = "auto"
    api: Api = "chat"
    max_output_tokens: int | None = None
    json_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    priority: Priority = "interactive"
    route: Route = "online"  # batch: OpenAI's Batch API, half price, answered within 24 h
    job_id: str | None = None
    max_image_tokens: int | None = None
    dedup: bool = True
    deadline_seconds: float | None = None  # expires_at = submit + this (default: settings)
    # Image generation (issue 15): kind generate/edit, the Images API options, an edit's mask.
    kind: Kind = "analyze"
    generation: GenerationOptions | None = None
    mask: ImageLike | None = None
    responses_model: str | None = None  # generate via the Responses image_generation tool
    tenant: str | None = None  # issue 11: set by the HTTP API from the caller's key
    callback_url: str | None = None  # issue 11: POST the final document here (signed)
    stream: bool = False  # issue 11: publish the output text as it streams (vision jobs only)


def check_request_id(req: SubmitRequest) -> None:
    """InvalidJobError unless ``req.job_id`` is None or an id the HTTP API accepts.

    An id is a Redis key and, through the API, a tenant's name for its job: one with control
    characters, 200+ characters or ``~`` (the tenant separator: ``acme~x`` would be tenant
    acme's job ``x``) is refused. With ``tenant`` set (the API), it is that tenant's scoped id.
    """
    job_id = req.job_id
    if job_id is None:
        return
    own = unscope(req.tenant, job_id) if isinstance(job_id, str) else None
    if own is None or not check_job_id(own):
        raise errors.InvalidJobError(
            "`job_id` is 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-' "
            f"(got {str(job_id)[:60]!r}{'...' if len(str(job_id)) > 60 else ''})"
        )


__all__ = ["ImageInput", "ImageLike", "SubmitRequest", "check_request_id", "describe_source"]
