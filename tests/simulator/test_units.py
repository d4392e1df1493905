"""Pure parts of the simulator: durations, buckets, busiest-window maths, schema answers."""

from __future__ import annotations

import doctest
import importlib
from typing import Any

import jsonschema
import pytest

from simulator.durations import format_duration, parse_duration
from simulator.ratelimit import Bucket, RateLimits
from simulator.schema_answer import Facts, from_schema
from simulator.stats import Stats


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (360, "6m0s"),
        (1, "1s"),
        (0.12, "120ms"),
        (0.017, "17ms"),
        (0.0004, "1ms"),
        (0, "0ms"),
        (8.64, "8.64s"),
        (59.9999, "1m0s"),
        (90.5, "1m30.5s"),
        (3723, "1h2m3s"),
    ],
)
def test_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds, abs=0.001)


def test_parse_duration_rejects_junk() -> None:
    for junk in ("", "5", "1x", "s1", "1m 2s"):
        with pytest.raises(ValueError):
            parse_duration(junk)


def test_bucket_refills_continuously_up_to_its_limit() -> None:
    bucket = Bucket(60, now=0.0)
    bucket.take(60)
    assert bucket.remaining(0.5) == 0
    assert bucket.remaining(10.0) == 10  # 1 per second
    assert bucket.wait_for(15, 10.0) == pytest.approx(5.0)
    assert bucket.remaining(1000.0) == 60


def test_admit_takes_nothing_when_refused() -> None:
    limits = RateLimits(tpm=600, rpm=100)
    assert limits.admit("m", 400, 0.0).error is None
    refused = limits.admit("m", 300, 0.0)
    assert refused.error is not None and refused.error.type == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "200"
    assert refused.error.headers["retry-after-ms"] == "10000"  # 100 missing at 10 per second
    assert limits.admit("m", 200, 0.0).error is None


def test_busiest_window_is_exact() -> None:
    stats = Stats(now=100.0, wall=0.0)
    for t, n in ((100.0, 10), (130.0, 20), (159.9, 30), (160.0, 40), (225.0, 5)):
        stats.admitted("m", n, t)
    snap = stats.snapshot(now=226.0)
    assert snap["max_tokens_in_any_60s"] == 90  # 130..189.9 holds 20+30+40
    assert snap["max_requests_in_any_60s"] == 3
    assert sum(snap["admitted_tokens_per_second"]) == 105
    assert len(snap["admitted_tokens_per_second"]) == 127


FACTS = Facts(
    text="IMAGE sha256=0123456789abcdef size=8x4 tokens=85\nA red image.",
    sha256="0123456789abcdef",
    colour="red",
    orientation="landscape",
    width=8,
    height=4,
    tokens=85,
    images=1,
)

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"description": {"type": "string"}},
        "required": ["description"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["cat", "dog"]},
            "count": {"type": "integer", "minimum": 3, "maximum": 9},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "ratio": {"type": "number", "multipleOf": 0.25, "minimum": 1.1},
            "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2},
            "code": {"type": "string", "minLength": 80, "maxLength": 90},
            "short": {"type": "string", "maxLength": 5},
            "when": {"type": "string", "format": "date-time"},
            "kind": {"const": "photo"},
            "maybe": {"type": ["string", "null"]},
            "nothing": {"type": "null"},
        },
        "required": [
            "label",
            "count",
            "score",
            "ratio",
            "flags",
            "code",
            "short",
            "when",
            "kind",
            "maybe",
            "nothing",
        ],
    },
    {
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {
                    "colour": {"type": "string"},
                    "sha256": {"type": "string"},
                    "width": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["colour", "sha256", "width", "tags"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
            "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
            "both": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
                ]
            },
            "either": {"oneOf": [{"type": "integer", "minimum": 5}, {"type": "string"}]},
        },
        "required": ["items", "note", "both", "either"],
        "additionalProperties": False,
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_schema_answers_are_valid(schema: dict[str, Any]) -> None:
    value = from_schema(schema, FACTS)
    jsonschema.validate(value, schema)


def test_schema_answers_carry_the_facts() -> None:
    first = from_schema(SCHEMAS[0], FACTS)
    assert first == {"description": FACTS.text}
    item = from_schema(SCHEMAS[2], FACTS)["items"][0]
    assert (item["colour"], item["sha256"], item["width"]) == ("red", "0123456789abcdef", 8)


@pytest.mark.parametrize(
    "name",
    [
        "answers",
        "config",
        "durations",
        "errors",
        "images",
        "payload",
        "ratelimit",
        "render",
        "schema_answer",
        "stats",
    ],
)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"simulator.{name}")
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
