"""End to end: producer -> Redis broker -> real worker processes -> simulator -> results."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from producer.client import Client, SubmitRequest
from shared.settings import Settings
from tests.conftest import Sim
from tests.pipeline.conftest import WorkerFactory, make_image, sent_hash

pytestmark = pytest.mark.slow
PROMPT = "Describe this image."
IMAGE_LINE = re.compile(r"IMAGE sha256=([0-9a-f]{16}) size=(\d+)x(\d+) tokens=(\d+)")


def client_for(redis_url: str) -> Client:
    return Client(Settings(redis_url=redis_url))


def test_n_distinct_images_give_n_matching_results(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    worker_factory(simulator, concurrency=16)
    worker_factory(simulator, concurrency=16)
    images = [make_image(i, size=(64 + i, 48 + 2 * i)) for i in range(40)]
    with client_for(redis_url) as c:
        ids = c.submit_many(
            SubmitRequest(images=[img], prompt=PROMPT, metadata={"i": i})
            for i, img in enumerate(images)
        )
        results = list(c.as_completed(ids, timeout=90))
    assert sorted(r.job_id for r in results) == sorted(ids)
    for r in results:
        assert r.status == "succeeded", r.error
        i = r.metadata["i"]
        m = IMAGE_LINE.search(r.output_text or "")
        assert m is not None, r.output_text
        assert m.group(1) == sent_hash(images[i])
        assert r.attempts == 1
        assert r.usage.input_tokens == r.usage.estimated_input_tokens  # exact estimate
        assert r.usage.image_tokens == int(m.group(4))
        assert r.cost_usd > 0
        assert r.timings.queued_at <= r.timings.started_at <= r.timings.finished_at
    stats = simulator.stats()
    assert len(stats["image_hashes"]) == 40
    assert set(stats["image_hashes"].values()) == {1}  # none duplicated


def test_resubmitting_a_job_id_does_not_run_it_twice(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    worker_factory(simulator)
    img = make_image(7)
    with client_for(redis_url) as c:
        first = c.submit([img], PROMPT, job_id="order-42")
        r1 = c.wait(first, timeout=30)
        second = c.submit([img], PROMPT, job_id="order-42")
        r2 = c.wait(second, timeout=30)
    assert first == second == "order-42"
    assert r1.model_dump() == r2.model_dump()
    assert simulator.stats()["requests"].get("200") == 1


def test_identical_jobs_share_one_api_call(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    worker_factory(simulator)
    img = make_image(9)
    with client_for(redis_url) as c:
        ids = c.submit_many(SubmitRequest(images=[img], prompt=PROMPT) for _ in range(5))
        results = list(c.as_completed(ids, timeout=30))
        opted_out = c.wait(c.submit([img], PROMPT, dedup=False), timeout=30)
    assert all(r.status == "succeeded" for r in results)
    assert len({r.output_text for r in results}) == 1
    assert sum(r.dedup_of is None for r in results) == 1
    assert sum(r.cost_usd > 0 for r in results) == 1
    assert opted_out.dedup_of is None and opted_out.cost_usd > 0
    assert simulator.stats()["requests"].get("200") == 2


def test_structured_output_and_responses_api(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    worker_factory(simulator)
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["colour", "count"],
        "additionalProperties": False,
    }
    with client_for(redis_url) as c:
        a = c.submit([make_image(1)], PROMPT, json_schema=schema)
        b = c.submit([make_image(2)], PROMPT, api="responses", model="gpt-4o", detail="low")
        ra, rb = c.wait(a, timeout=30), c.wait(b, timeout=30)
    assert ra.status == "succeeded", ra.error
    assert isinstance(ra.output_json, dict) and set(ra.output_json) == {"colour", "count"}
    assert rb.status == "succeeded", rb.error
    m = IMAGE_LINE.search(rb.output_text or "")
    assert m is not None and m.group(4) == "85"  # gpt-4o low detail


def test_bad_input_fails_fast_without_an_api_call(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    worker_factory(simulator)
    with client_for(redis_url) as c:
        ids = {
            "corrupt": c.submit([b"\x89PNG\r\n\x1a\n garbage"], PROMPT),
            "html": c.submit([b"<html><body>hi</body></html>"], PROMPT),
            "empty": c.submit([b""], PROMPT),
            "bad_base64": c.submit(["data:image/png;base64,@@@notbase64@@@"], PROMPT),
            "pasted": c.submit([make_image(3)], "see data:image/png;base64,iVBORw0KGgoAAAANS"),
            "forbidden_url": c.submit(["http://169.254.169.254/latest/meta-data"], PROMPT),
            "no_images": c.submit([], PROMPT),
        }
        results = {k: c.wait(v, timeout=30) for k, v in ids.items()}
    expected = {
        "corrupt": "invalid_image",
        "html": "invalid_image",
        "empty": "invalid_image",
        "bad_base64": "invalid_image",
        "pasted": "prompt_contains_image",
        "forbidden_url": "image_url_forbidden",
        "no_images": "invalid_job",
    }
    for name, code in expected.items():
        r = results[name]
        assert r.status == "failed", name
        assert r.error is not None and (r.error.code, r.error.retryable) == (code, False), (name, r)
        assert r.attempts == 0, name
    assert simulator.stats()["requests"] == {}


@pytest.mark.parametrize(
    ("sim_flags", "env", "code", "attempts"),
    [
        (("--fail-rate", "1.0"), {}, "api_error", 3),
        (("--reset-rate", "1.0"), {}, "connection_error", 3),
        (("--slow-rate", "1.0"), {"IMGQ_REQUEST_TIMEOUT_SECONDS": "1"}, "timeout", 3),
        (("--insufficient-quota",), {}, "insufficient_quota", 1),
    ],
)
def test_api_failures_end_with_their_code_and_attempts(
    redis_url: str,
    simulator_factory: Callable[..., Sim],
    worker_factory: WorkerFactory,
    sim_flags: tuple[str, ...],
    env: dict[str, str],
    code: str,
    attempts: int,
) -> None:
    sim = simulator_factory("--latency-ms", "1", "--jitter-ms", "0", "--seed", "3", *sim_flags)
    worker_factory(sim, IMGQ_MAX_ATTEMPTS="3", **env)
    with client_for(redis_url) as c:
        r = c.wait(c.submit([make_image(5)], PROMPT), timeout=60)
    assert r.status == "failed"
    assert r.error is not None and r.error.code == code, r.error
    assert r.attempts == attempts


def test_unknown_model_fails_with_model_not_found(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    worker_factory(simulator)
    with client_for(redis_url) as c:
        r = c.wait(c.submit([make_image(5)], PROMPT, model="gpt-nope"), timeout=30)
    assert r.status == "failed" and r.error is not None
    assert (r.error.code, r.attempts) == ("model_not_found", 1)


def test_a_429_is_retried_after_retry_after_and_succeeds(
    redis_url: str, simulator_factory: Callable[..., Sim], worker_factory: WorkerFactory
) -> None:
    # The simulator's TPM is far below what the limiter was told, so of two calls sent at once the
    # second gets a 429. The limiter learns the real limit from the headers (the smaller wins) and
    # holds the retry until the first call leaves its 60 s window; then it succeeds.
    sim = simulator_factory("--latency-ms", "1", "--jitter-ms", "0", "--tpm", "1000")
    worker_factory(sim, IMGQ_MODEL_LIMITS='{"gpt-4o": {"tpm": 1000000, "rpm": 10000}}')
    opts = {"model": "gpt-4o", "detail": "low", "max_output_tokens": 420}
    with client_for(redis_url) as c:
        ids = c.submit_many(
            SubmitRequest(images=[make_image(11 + i)], prompt=PROMPT, **opts) for i in range(2)
        )
        results = list(c.as_completed(ids, timeout=100))
    assert all(r.status == "succeeded" for r in results), [r.error for r in results]
    assert sorted(r.attempts for r in results) == [1, 2]
    assert sim.stats()["codes"].get("rate_limit_exceeded") == 1
