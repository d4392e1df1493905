"""The Responses route of generate jobs: the ``image_generation`` tool on a mainline model.

The request is ``{"model": <job.model>, "input": <prompt>, "tools": [{"type":
"image_generation", ...options}]}``; the answer's ``image_generation_call`` items become an
``ImagesResponse`` so the rest of the path (store, result, cost) is the Images API's.

>>> body = responses_body("gpt-4.1-mini", "a fox", {"model": "gpt-image-1", "n": 1, "size": "1024x1024"})
>>> body["tools"]
[{'type': 'image_generation', 'size': '1024x1024'}]
"""

from __future__ import annotations

import json
from typing import Any

from openai.types import ImagesResponse

from shared import errors
from shared.catalogue import default_catalogue
from shared.generation import TOOL_MODEL
from shared.image_models import generation_cost_usd

_NOT_TOOL_OPTIONS = ("model", "n", "response_format", "style")


def responses_body(model: str, prompt: str, params: dict[str, Any]) -> dict[str, Any]:
    """The Responses request asking ``model`` to draw ``prompt`` with the image tool."""
    tool = {"type": "image_generation"}
    tool.update({k: v for k, v in params.items() if k not in _NOT_TOOL_OPTIONS})
    return {"model": model, "input": prompt, "tools": [tool]}


def images_response(raw: bytes) -> ImagesResponse:
    """The ``image_generation_call`` items of a Responses answer, as an ``ImagesResponse``."""
    try:
        data = json.loads(raw)
        calls = [o for o in data.get("output") or [] if o.get("type") == "image_generation_call"]
        usage = data.get("usage") or {}
        first = calls[0] if calls else {}
        return ImagesResponse.model_validate(
            {
                "created": int(data.get("created_at") or 0),
                "data": [
                    {"b64_json": c.get("result"), "revised_prompt": c.get("revised_prompt")}
                    for c in calls
                ],
                "usage": {
                    "input_tokens": int(usage.get("input_tokens", 0)),
                    "input_tokens_details": {
                        "text_tokens": int(usage.get("input_tokens", 0)),
                        "image_tokens": 0,
                    },
                    "output_tokens": int(usage.get("output_tokens", 0)),
                    "total_tokens": int(usage.get("total_tokens", 0)),
                },
                "size": first.get("size"),
                "quality": first.get("quality"),
                "output_format": first.get("output_format"),
            }
        )
    except (ValueError, AttributeError, TypeError) as exc:
        raise errors.UpstreamServerError(
            f"the API answered 200 with a malformed body: {exc}"
        ) from None


def responses_cost_usd(
    model: str, *, input_tokens: int, output_image_tokens: int, size: str, quality: str
) -> float | None:
    """Text input at the mainline model's price, the picture at gpt-image-1's output price."""
    text = default_catalogue().cost_usd(model, input_tokens, 0)
    if text is None:
        return None
    picture = generation_cost_usd(
        TOOL_MODEL, n_images=1, size=size, quality=quality, output_image_tokens=output_image_tokens
    )
    return round(text + picture, 8)
