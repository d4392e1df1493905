"""Build a JSON value valid against a JSON schema, filled with what the simulator saw.

Handles what structured outputs use: objects, arrays, strings (enum, const, formats, lengths),
numbers and integers (bounds), booleans, null, ``anyOf``/``oneOf``/``allOf``, type lists and
local ``$ref`` (``#/$defs/...``, as pydantic and the SDK's ``parse()`` emit). String fields get the
answer text, or a fact when the field name says which (``colour``, ``orientation``, ``sha256``...).

>>> schema = {"type": "object", "properties": {"colour": {"type": "string"},
...           "n": {"type": "integer", "minimum": 2}}, "required": ["colour", "n"]}
>>> from_schema(schema, Facts(text="IMAGE ...", colour="red"))
{'colour': 'red', 'n': 2}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_MAX_DEPTH = 12
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "simulator@example.com",
    "uri": "http://127.0.0.1/image",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "localhost",
    "duration": "P1D",
}


@dataclass(frozen=True)
class Facts:
    """The answer's content, to be spread into schema fields."""

    text: str
    sha256: str = ""
    colour: str = ""
    orientation: str = ""
    width: int = 0
    height: int = 0
    tokens: int = 0
    images: int = 0


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < _MAX_DEPTH:
        ref = str(schema["$ref"])
        target: Any = root
        if ref.startswith("#"):
            for key in ref.lstrip("#").strip("/").split("/"):
                if key:
                    target = target.get(key, {}) if isinstance(target, dict) else {}
        else:
            target = {}
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _string_for(name: str, facts: Facts, schema: dict[str, Any]) -> str:
    key = name.lower()
    if "format" in schema and schema["format"] in _FORMATS:
        return _FORMATS[schema["format"]]
    if ("colour" in key or "color" in key) and facts.colour:
        value = facts.colour
    elif "orientation" in key and facts.orientation:
        value = facts.orientation
    elif ("sha" in key or "hash" in key) and facts.sha256:
        value = facts.sha256
    elif key in ("size", "dimensions", "resolution") and facts.width:
        value = f"{facts.width}x{facts.height}"
    else:
        value = facts.text
    min_len = int(schema.get("minLength", 0))
    max_len = schema.get("maxLength")
    if len(value) < min_len:
        value = value + "." * (min_len - len(value))
    if isinstance(max_len, int):
        value = value[:max_len]
    return value


def _number_for(name: str, facts: Facts, schema: dict[str, Any], integer: bool) -> float | int:
    key = name.lower()
    guess: float = 0
    if "width" in key:
        guess = facts.width
    elif "height" in key:
        guess = facts.height
    elif "token" in key:
        guess = facts.tokens
    elif "count" in key or "number" in key or key.startswith("num"):
        guess = facts.images
    elif "confidence" in key or "score" in key or "probability" in key:
        guess = 1 if integer else 0.9
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if isinstance(low, int | float):
        step = 1 if integer else 0.5
        low = low + step if "exclusiveMinimum" in schema and "minimum" not in schema else low
        guess = max(guess, low)
    if isinstance(high, int | float):
        step = 1 if integer else 0.5
        high = high - step if "exclusiveMaximum" in schema and "maximum" not in schema else high
        guess = min(guess, high)
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0:
        guess = math.ceil(guess / multiple) * multiple
    return math.ceil(guess) if integer else float(guess)


def _value(schema: Any, root: dict[str, Any], facts: Facts, name: str, depth: int) -> Any:
    schema = _resolve(schema, root)
    if depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            resolved = [_resolve(o, root) for o in options]
            non_null = [o for o in resolved if o.get("type") != "null"] or resolved
            return _value(non_null[0], root, facts, name, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root))
        return _value(merged, root, facts, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _value(v, root, facts, k, depth + 1) for k, v in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 0)))
        max_items = schema.get("maxItems")
        if isinstance(max_items, int):
            count = min(count, max_items)
        item = schema.get("items", {})
        singular = name[:-1] if name.endswith("s") else name
        return [_value(item, root, facts, singular, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string_for(name, facts, schema)
    if kind in ("integer", "number"):
        return _number_for(name, facts, schema, kind == "integer")
    if kind == "boolean":
        return True
    return None


def from_schema(schema: dict[str, Any], facts: Facts) -> Any:
    """A value valid against ``schema`` (best effort for ``pattern``, which is not generated)."""
    return _value(schema, schema, facts, "", 0)
