"""Parse chat-completions and responses request bodies into one :class:`Prompt`.

Both APIs reduce to the same things for billing and answering: text parts, image references,
message count, the output budget, streaming and an optional JSON schema.

>>> p = parse_chat({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
>>> (p.model, p.texts, p.messages, p.max_output)
('gpt-4o', ['hi'], 1, None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

from shared.vision_tokens import Detail
from simulator import errors

Api = Literal["chat", "responses"]
_DETAILS = ("low", "high", "auto")


@dataclass(frozen=True)
class ImageRef:
    url: str
    detail: Detail
    param: str


@dataclass
class Prompt:
    """What a request asks for, whichever API it came through."""

    api: Api
    model: str
    texts: list[str] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)
    messages: int = 1
    max_output: int | None = None
    stream: bool = False
    include_usage: bool = False
    # ("json_schema", schema) / ("json_object", None) / None for plain text.
    format: tuple[str, dict[str, Any] | None] | None = None
    schema_name: str = "response"


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_request("you must provide a model parameter", param="model")
    return model


def _detail(value: Any, param: str) -> Detail:
    if value is None:
        return "auto"
    if value not in _DETAILS:
        raise errors.bad_request(
            f"Invalid value: '{value}'. Supported values are: 'low', 'high', and 'auto'.",
            param=param,
            code="invalid_value",
        )
    return cast(Detail, value)


def _max_tokens(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise errors.bad_request(
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
                f"{value} instead.",
                param=name,
                code="integer_below_min_value",
            )
        return value
    return None


def parse_chat(body: dict[str, Any]) -> Prompt:
    prompt = Prompt(api="chat", model=_require_model(body))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array" if isinstance(messages, list) else None,
        )
    prompt.messages = len(messages)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise errors.bad_request(f"Invalid type for 'messages[{i}]'.", param=f"messages[{i}]")
        content = msg.get("content")
        if content is None or isinstance(content, str):
            if content:
                prompt.texts.append(content)
            continue
        if not isinstance(content, list):
            raise errors.bad_request(
                f"Invalid type for 'messages[{i}].content'.", param=f"messages[{i}].content"
            )
        for j, part in enumerate(content):
            param = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("text", "input_text", "output_text", "refusal"):
                text = part.get("text") or part.get("refusal") or ""
                prompt.texts.append(str(text))
            elif kind == "image_url":
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str) or not url:
                    raise errors.bad_request(
                        f"Missing required parameter: '{param}.image_url.url'.",
                        param=f"{param}.image_url.url",
                        code="missing_required_parameter",
                    )
                detail = ref.get("detail") if isinstance(ref, dict) else None
                prompt.images.append(
                    ImageRef(url, _detail(detail, f"{param}.image_url.detail"), param)
                )
            else:
                raise errors.bad_request(
                    f"Invalid value: '{kind}'. Supported values are: 'text', 'image_url', "
                    "'input_audio', 'refusal', 'audio', and 'file'.",
                    param=f"{param}.type",
                    code="invalid_value",
                )
    prompt.max_output = _max_tokens(body, "max_completion_tokens", "max_tokens")
    prompt.stream = bool(body.get("stream"))
    options = body.get("stream_options")
    prompt.include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            prompt.format = ("json_schema", dict(spec.get("schema") or {}))
            prompt.schema_name = str(spec.get("name") or "response")
        elif fmt.get("type") == "json_object":
            prompt.format = ("json_object", None)
    return prompt


def parse_responses(body: dict[str, Any]) -> Prompt:
    prompt = Prompt(api="responses", model=_require_model(body))
    instructions = body.get("instructions")
    items: Any = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise errors.bad_request(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    prompt.messages = len(items) + (1 if instructions else 0)
    if isinstance(instructions, str) and instructions:
        prompt.texts.append(instructions)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise errors.bad_request(f"Invalid type for 'input[{i}]'.", param=f"input[{i}]")
        content = item.get("content")
        if isinstance(content, str):
            prompt.texts.append(content)
            continue
        if not isinstance(content, list):
            raise errors.bad_request(
                f"Invalid type for 'input[{i}].content'.", param=f"input[{i}].content"
            )
        for j, part in enumerate(content):
            param = f"input[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "output_text", "text"):
                prompt.texts.append(str(part.get("text") or ""))
            elif kind == "input_image":
                url = part.get("image_url")
                if not isinstance(url, str) or not url:
                    raise errors.bad_request(
                        "The simulator supports input_image with image_url only "
                        f"(no file_id): missing '{param}.image_url'.",
                        param=f"{param}.image_url",
                        code="missing_required_parameter",
                    )
                prompt.images.append(
                    ImageRef(url, _detail(part.get("detail"), f"{param}.detail"), param)
                )
            else:
                raise errors.bad_request(
                    f"Invalid value: '{kind}'. Supported values are: 'input_text', "
                    "'input_image', 'output_text', 'refusal', 'input_file', 'computer_screenshot', "
                    "and 'summary_text'.",
                    param=f"{param}.type",
                    code="invalid_value",
                )
    prompt.max_output = _max_tokens(body, "max_output_tokens")
    prompt.stream = bool(body.get("stream"))
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            prompt.format = ("json_schema", dict(fmt.get("schema") or {}))
            prompt.schema_name = str(fmt.get("name") or "response")
        elif fmt.get("type") == "json_object":
            prompt.format = ("json_object", None)
    return prompt
