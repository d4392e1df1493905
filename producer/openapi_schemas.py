"""The JSON Schemas of the API document's bodies (producer/openapi.py puts them together).

The result schema is not here: it is the ``Result`` model's own (see ``build_spec``). The
Images API options are listed by hand (with their bounds); they are the model's fields:

>>> from shared.generation import GenerationOptions
>>> sorted(GENERATION_OPTIONS) == sorted(GenerationOptions.model_fields)
True
"""

from __future__ import annotations

from typing import Any

ERROR_DETAIL = {
    "type": "object",
    "required": ["code", "message", "request_id"],
    "properties": {
        "code": {"type": "string", "description": "stable, e.g. not_found, unauthorized"},
        "message": {"type": "string"},
        "request_id": {"type": "string"},
    },
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
}
_JOB_ID = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}
_CALLBACK = {
    "type": "string",
    "maxLength": 2048,
    "description": "POST the final document here, signed (Imgq-Signature)",
}
IMAGE = {
    "oneOf": [
        {"type": "string", "description": "https URL, data URL or base64"},
        {
            "type": "object",
            "properties": {
                "url": {"type": "string"},
                "data": {"type": "string"},
                "base64": {"type": "string"},
                "detail": {"enum": ["auto", "low", "high"]},
            },
        },
    ]
}
SUBMIT = {
    "type": "object",
    "required": ["prompt"],
    "additionalProperties": False,
    "properties": {
        "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"}},
        "prompt": {"type": "string", "minLength": 1},
        "model": {"type": "string", "maxLength": 100},
        "detail": {"enum": ["auto", "low", "high"]},
        "api": {"enum": ["chat", "responses"]},
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "max_image_tokens": {"type": "integer", "minimum": 1},
        "priority": {"enum": ["interactive", "bulk"]},
        "route": {"enum": ["online", "batch", "auto"]},
        "job_id": _JOB_ID,
        "dedup": {"type": "boolean"},
        "json_schema": {"type": "object"},
        "metadata": {"type": "object"},
        "callback_url": _CALLBACK,
        "deadline_seconds": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "the job fails `expired` when not finished this many seconds after "
            "submit; default IMGQ_JOB_DEADLINE_SECONDS, at most IMGQ_IMAGE_TTL_SECONDS (24 h)",
        },
        "stream": {
            "type": "boolean",
            "description": "call the model streaming and send the text as it comes as `delta` "
            "events on /v1/jobs/{job_id}/events (vision jobs answered online; the result is "
            "the same document)",
        },
    },
}
# The Images API's options (shared/generation.py GenerationOptions; unset: the API's default).
# The model decides which apply: one it does not take fails the job `invalid_job` at submit.
GENERATION_OPTIONS: dict[str, Any] = {
    "model": {"type": "string", "maxLength": 100, "description": "default gpt-image-1"},
    "n": {"type": "integer", "minimum": 1, "description": "pictures in one call"},
    "size": {"type": "string", "description": "e.g. 1024x1024, 1536x1024, auto"},
    "quality": {"type": "string", "description": "low, medium, high, auto (gpt-image-1)"},
    "background": {"type": "string", "description": "transparent, opaque, auto"},
    "output_format": {"enum": ["png", "jpeg", "webp"]},
    "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
    "moderation": {"type": "string", "description": "auto or low (gpt-image-1)"},
    "style": {"type": "string", "description": "vivid or natural (dall-e-3)"},
    "response_format": {"enum": ["url", "b64_json"], "description": "DALL-E models"},
}
_PICTURE_JOB: dict[str, Any] = {
    "prompt": {"type": "string", "minLength": 1},
    "metadata": {"type": "object"},
    "priority": {"enum": ["interactive", "bulk"]},
    "job_id": _JOB_ID,
    "callback_url": _CALLBACK,
}
GENERATE = {
    "type": "object",
    "required": ["prompt"],
    "additionalProperties": False,
    "properties": {**_PICTURE_JOB, **GENERATION_OPTIONS},
}
BINARY = {"type": "string", "format": "binary"}
EDIT = {
    "type": "object",
    "required": ["prompt", "image"],
    "properties": {
        "image": {**BINARY, "description": "the picture to edit (repeat as image[] for more)"},
        "mask": {**BINARY, "description": "PNG with alpha, the first image's size"},
        **{k: v for k, v in _PICTURE_JOB.items() if k != "metadata"},
        "metadata": {"type": "string", "description": "a JSON object, as text"},
        **GENERATION_OPTIONS,
    },
}

BATCH_ITEM = {
    "type": "object",
    "required": ["index", "status"],
    "properties": {
        "index": {"type": "integer"},
        "status": {"type": "integer"},
        "job": {"$ref": "#/components/schemas/Result"},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}

# Each server-sent event: ``event: status`` with ``data:`` the job document as JSON, or (a job
# submitted with ``stream``) ``event: delta`` with ``data:`` a Delta as JSON.
SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"enum": ["status", "delta"]}, "data": {"type": "string"}},
}
DELTA = {
    "type": "object",
    "required": ["attempt", "offset", "text"],
    "properties": {
        "attempt": {
            "type": "integer",
            "minimum": 1,
            "description": "the API attempt the text belongs to; a retried call starts again at "
            "offset 0 with the next attempt (drop the text of earlier attempts)",
        },
        "offset": {
            "type": "integer",
            "minimum": 0,
            "description": "where `text` starts in the attempt's output, in characters (Unicode "
            "code points): an offset past what you have means you missed some",
        },
        "text": {"type": "string"},
    },
}
