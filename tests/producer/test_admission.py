"""Submit-time admission: each cap refused with its own code, before anything is stored or paid.

Rejections use an idle broker database (no worker), so what Redis holds afterwards is exactly what
the submission left: one small failed record, no image, no message. The end-to-end tests run a
real worker against the simulator serving a model name the catalogue does not know.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.client import Client, SubmitRequest
from shared.jobs import Result
from shared.settings import Settings
from tests.conftest import Sim
from tests.pipeline.conftest import WorkerFactory, make_image
from tests.producer.conftest import Stack

PROMPT = "Describe this image."
LARGE_SCHEMA = {
    "type": "object",
    "properties": {f"field_{i:05d}": {"type": "string"} for i in range(3000)},
}


def _deep(levels: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(levels):
        node["x"] = node = {}
    return root


def _submit(url: str, req: SubmitRequest, **settings: Any) -> tuple[Result, list[bytes]]:
    with Client(Settings(redis_url=url, **settings)) as c:
        (job_id,) = c.submit_many([req])
        result = c.get(job_id)
    assert result is not None
    keys = sorted(redis.Redis.from_url(url).keys("*"))
    return result, keys


def _assert_refused(url: str, result: Result, keys: list[bytes], code: str) -> None:
    assert result.status == "failed", result
    assert result.error is not None and result.error.code == code, result.error
    assert not result.error.retryable
    # Nothing but the failed record: no image, no broker message, no job state.
    assert len(keys) == 1 and result.job_id.encode() in keys[0], keys
    assert redis.Redis.from_url(url).llen("interactive") == 0
    assert len(result.model_dump_json()) < 2048  # a small record, whatever was sent


CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("too many images", {"images": [make_image(i) for i in range(3)]},
     {"max_images_per_job": 2}, "too_many_images"),
    ("uploads over the byte cap", {"images": [make_image(1, (300, 300)), make_image(2, (300, 300))]},
     {"max_job_input_bytes": 1500}, "job_input_too_large"),
    ("uploads over the pixel cap", {"images": [make_image(1, (40, 30)), make_image(2, (40, 30))]},
     {"max_job_pixels": 2000}, "job_pixels_too_large"),
    ("prompt over the byte cap", {"prompt": "é" * 600}, {"max_prompt_bytes": 1000},
     "prompt_too_large"),
    ("64 MB prompt", {"prompt": "a" * (64 * 1024 * 1024)}, {}, "prompt_too_large"),
    ("prompt over the context window",  # 8,192 tokens; 72 KB is tokenised off the loop
     {"prompt": "hello " * 12_000, "model": "computer-use-preview", "api": "responses"}, {},
     "context_length_exceeded"),
    ("output over the model's maximum", {"model": "gpt-4o", "max_output_tokens": 20_000}, {},
     "max_output_tokens_too_large"),
    ("metadata over the byte cap", {"metadata": {"blob": "x" * 20_000}}, {}, "metadata_too_large"),
    ("metadata nested 210 deep", {"metadata": _deep(210)}, {}, "metadata_too_large"),
    ("json_schema over the byte cap", {"json_schema": LARGE_SCHEMA}, {}, "json_schema_too_large"),
    ("json_schema nested too deep", {"json_schema": {"type": "object", "x": _deep(40)}}, {},
     "json_schema_too_large"),
    ("invalid json_schema", {"json_schema": {"type": "object", "required": "name"}}, {},
     "invalid_json_schema"),
    ("json_schema without an object root", {"json_schema": {"type": "string"}}, {},
     "invalid_json_schema"),
    ("an image-generation model", {"model": "dall-e-3"}, {}, "unsupported_by_model"),
    ("chat on a Responses-only model", {"model": "computer-use-preview"}, {},
     "unsupported_by_model"),
    ("unknown model, refuse policy", {"model": "my-llava"}, {"unknown_models": "refuse"},
     "model_not_found"),
    ("a PDF among the images", {"images": [make_image(1), b"%PDF-1.7 not an image"]}, {},
     "unsupported_image_format"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "settings", "code"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_each_cap_is_refused_at_submit_and_nothing_is_stored(
    stack: Stack, fields: dict[str, Any], settings: dict[str, Any], code: str
) -> None:
    url = stack.idle_redis_url()
    req = SubmitRequest(**{"images": [make_image(7)], "prompt": PROMPT, **fields})
    result, keys = _submit(url, req, **settings)
    _assert_refused(url, result, keys, code)


def test_nested_metadata_probe_gives_a_clear_error_and_a_small_record(stack: Stack) -> None:
    url = stack.idle_redis_url()
    req = SubmitRequest(images=[make_image(8)], prompt=PROMPT, metadata=_deep(210))
    result, keys = _submit(url, req)
    _assert_refused(url, result, keys, "metadata_too_large")
    assert result.error is not None
    assert "nested more than 16 levels" in result.error.message
    assert result.metadata == {}  # the offending metadata is not stored in the record
    # The record parses back (the probe used to break the stored result's parser).
    assert Result.model_validate_json(result.model_dump_json()) == result


async def test_nested_metadata_probe_over_http_is_no_500(stack: Stack) -> None:
    """The issue's probe through the API: a clear error, a readable record, /healthz fine."""
    from aiohttp.test_utils import TestClient, TestServer

    from producer.api import create_app

    url = stack.idle_redis_url()
    client: TestClient = TestClient(TestServer(create_app(Settings(redis_url=url, api_auth="off"))))  # type: ignore[type-arg]
    await client.start_server()
    try:
        body = {
            "images": ["data:image/png;base64," + base64.b64encode(make_image(11)).decode()],
            "prompt": PROMPT,
            "metadata": _deep(210),
            "job_id": "healthz-probe",
        }
        resp = await client.post("/v1/jobs", json=body)
        assert resp.status < 500
        doc = await resp.json()
        assert doc["status"] == "failed" and doc["error"]["code"] == "metadata_too_large"
        again = await client.get("/v1/jobs/healthz-probe")
        assert again.status == 200 and (await again.json())["error"]["code"] == "metadata_too_large"
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()
    assert not redis.Redis.from_url(url).keys("imgq:img:*")


def test_a_bad_upload_after_a_good_one_stores_neither(stack: Stack) -> None:
    url = stack.idle_redis_url()
    good = make_image(9, (200, 150))
    login_page = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
    req = SubmitRequest(images=[good, login_page], prompt=PROMPT)
    result, keys = _submit(url, req)
    _assert_refused(url, result, keys, "invalid_image")
    assert not [k for k in keys if k.startswith(b"imgq:img:")]


def test_long_prompts_within_the_window_are_accepted(stack: Stack) -> None:
    """The caps must not refuse real work: a 20k-token prompt fits gpt-4o and is queued."""
    url = stack.idle_redis_url()
    req = SubmitRequest(
        images=[make_image(10)],
        prompt="hello " * 20_000,
        model="gpt-4o-2024-08-06",
        metadata=_deep(15),
        json_schema={"type": "object", "properties": {"a": {"type": "string"}}},
    )
    result, keys = _submit(url, req)
    assert result.status == "queued", result.error
    assert [k for k in keys if k.startswith(b"imgq:img:")]
    assert redis.Redis.from_url(url).llen("interactive") == 1


# -- end to end: an uncatalogued model against an OpenAI-compatible server -----------------------
def _calls(sim: Sim) -> int:
    return sum(sim.stats()["requests"].values())  # type: ignore[no-any-return]


def _llava_sim(simulator_factory: Any) -> Sim:
    return simulator_factory(  # type: ignore[no-any-return]
        "--latency-ms", "5", "--jitter-ms", "0", "--tpm", "10000000", "--rpm", "100000",
        "--extra-model", "my-llava",
    )  # fmt: skip


def test_uncatalogued_model_is_accepted_with_null_cost(
    redis_url: str, simulator_factory: Any, worker_factory: WorkerFactory
) -> None:
    sim = _llava_sim(simulator_factory)
    worker_factory(sim)
    with Client(Settings(redis_url=redis_url)) as c:
        r = c.wait(c.submit([make_image(21)], PROMPT, model="my-llava"), timeout=60)
    assert r.status == "succeeded", r.error
    assert r.cost_usd is None and r.usage.input_tokens > 0
    assert _calls(sim) == 1
    # The name created no limiter key (they live under the one bounded name "unknown").
    keys = redis.Redis.from_url(redis_url).keys("*")
    assert not [k for k in keys if b"my-llava" in k], keys
    assert [k for k in keys if b"unknown" in k]


def test_uncatalogued_model_with_a_configured_price(
    redis_url: str, simulator_factory: Any, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    models = tmp_path / "models.json"
    price = {"like": "gpt-4o", "prices": {"input": 1.0, "output": 3.0}}
    models.write_text(json.dumps({"my-llava": price}), encoding="utf-8")
    sim = _llava_sim(simulator_factory)
    worker_factory(sim, IMGQ_MODELS_FILE=str(models))
    with Client(Settings(redis_url=redis_url, models_file=models, unknown_models="refuse")) as c:
        r = c.wait(c.submit([make_image(22)], PROMPT, model="my-llava"), timeout=60)
    assert r.status == "succeeded", r.error
    expected = (r.usage.input_tokens * 1.0 + r.usage.output_tokens * 3.0) / 1e6
    assert r.cost_usd == pytest.approx(expected) and expected > 0
    assert _calls(sim) == 1


def test_uncatalogued_model_refused_at_submit_makes_no_call(
    redis_url: str, simulator_factory: Any, worker_factory: WorkerFactory
) -> None:
    sim = _llava_sim(simulator_factory)
    worker_factory(sim)
    with Client(Settings(redis_url=redis_url, unknown_models="refuse")) as c:
        refused = c.wait(c.submit([make_image(23)], PROMPT, model="my-llava"), timeout=30)
        # A known model still runs on the same stack: the worker was there to make the call.
        ok = c.wait(c.submit([make_image(24)], PROMPT, model="gpt-4o"), timeout=60)
    assert refused.status == "failed" and refused.error is not None
    assert refused.error.code == "model_not_found"
    assert ok.status == "succeeded"
    assert sim.stats()["by_model"].keys() == {"gpt-4o"} and _calls(sim) == 1


@pytest.mark.parametrize("pos", [0, 65_536 - 300, 65_536 + 1_000, 3 * 65_536 - 5, 1_199_000])
def test_prompt_guard_scans_long_prompts_in_windows_without_missing_a_blob(pos: int) -> None:
    from shared.errors import PromptContainsImageError
    from shared.prompt_guard import check_prompt

    text = "hello world " * 100_000
    check_prompt(text)
    for blob in ("A" * 600, " data:image/png;base64,iVBORw0KGgo= "):
        with pytest.raises(PromptContainsImageError):
            check_prompt(text[:pos] + blob + text[pos:])
