"""Generate and edit jobs end to end: the client, two real workers, the simulator, Redis or S3."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.client import Client
from shared.image_models import output_tokens
from shared.settings import Settings
from simulator.images_api import MODERATION_TRIGGER
from tests.conftest import Sim
from tests.generate.conftest import decode, fast_sim_args, mask_png, picture
from tests.pipeline.conftest import WorkerFactory
from tests.storage.conftest import BUCKET
from tests.storage.conftest import s3 as s3  # the fixtures
from tests.storage.conftest import s3_endpoint as s3_endpoint

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def images_stats(sim: Sim) -> dict[str, Any]:
    with urllib.request.urlopen(f"{sim.root}/_sim/images/stats", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


@pytest.fixture
def gen_sim(simulator_factory: Callable[..., Sim]) -> Sim:
    args = fast_sim_args()
    args[args.index("--latency-ms") + 1] = "30"
    return simulator_factory(*args)


def test_generate_and_edit_jobs_through_two_workers(
    redis_url: str, gen_sim: Sim, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    worker_factory(gen_sim, concurrency=4)
    worker_factory(gen_sim, concurrency=4)
    with Client(Settings(redis_url=redis_url)) as c:
        gpt = c.generate("a lighthouse", n=2, size="1536x1024", quality="low", output_format="jpeg")
        dalle = c.generate("a cat", model="dall-e-3", size="1024x1792", metadata={"k": 1})
        edit = c.edit([picture(64, 48), picture(80, 80, "WEBP")], "add a hat",
                      mask=mask_png(64, 48), size="1024x1024", quality="medium")  # fmt: skip
        # DALL·E 2 answering URLs: the worker downloads and stores the bytes, keeps the URL.
        urls = c.generate("a dog", model="dall-e-2", size="256x256", response_format="url")
        done = {r.job_id: r for r in c.as_completed([gpt, dalle, edit, urls], timeout=60)}
        for job_id in done:
            assert done[job_id].status == "succeeded", done[job_id].error
        saved = {j: c.save_images(j, tmp_path / j) for j in (gpt, dalle, edit, urls)}
    r = done[gpt]
    assert [(i.width, i.height, i.format) for i in r.images] == [(1536, 1024, "jpeg")] * 2
    assert r.usage.output_tokens == 2 * output_tokens("gpt-image-1", "1536x1024", "low")
    assert r.cost_usd is not None and r.cost_usd > 0 and r.attempts == 1
    assert all(i.ref.startswith("redis:imgq:img:") for i in r.images)
    for path in saved[gpt]:
        assert decode(path.read_bytes()).size == (1536, 1024) and path.suffix == ".jpg"
    d = done[dalle]
    assert d.images[0].revised_prompt and "a cat" in d.images[0].revised_prompt
    assert d.cost_usd == pytest.approx(0.08) and d.metadata == {"k": 1}
    img = decode(saved[dalle][0].read_bytes())
    assert (img.format, img.size) == ("PNG", (1024, 1792))
    e = done[edit]
    assert e.usage.image_tokens > 0 and len(e.images) == 1
    assert decode(saved[edit][0].read_bytes()).size == (1024, 1024)
    u = done[urls]
    assert u.images[0].url and u.images[0].url.startswith(gen_sim.root + "/_sim/images/")
    assert decode(saved[urls][0].read_bytes()).size == (256, 256)
    assert u.cost_usd == pytest.approx(0.016)
    # Output bytes are content-addressed in Redis, with the image TTL.
    rc = redis.Redis.from_url(redis_url)
    key = r.images[0].ref.removeprefix("redis:")
    assert 0 < rc.ttl(key) <= Settings().image_ttl_seconds
    assert images_stats(gen_sim)["rate_limited"] == 0


def test_generated_images_in_s3_with_presigned_urls(
    redis_url: str,
    gen_sim: Sim,
    worker_factory: WorkerFactory,
    s3: Any,
    s3_endpoint: str,
) -> None:
    worker_factory(gen_sim, concurrency=4, IMGQ_IMAGE_BACKEND="s3", IMGQ_S3_BUCKET=BUCKET,
                   AWS_ENDPOINT_URL=s3_endpoint, **AWS)  # fmt: skip
    settings = Settings(
        redis_url=redis_url, image_backend="s3", s3_bucket=BUCKET, s3_endpoint_url=s3_endpoint
    )
    with Client(settings) as c:
        job = c.generate("a harbour", size="1024x1536", quality="low", output_format="webp")
        r = c.wait(job, timeout=60)
    assert r.status == "succeeded", r.error
    out = r.images[0]
    assert out.ref.startswith(f"s3://{BUCKET}/imgq/images/") and out.url
    with urllib.request.urlopen(out.url, timeout=10) as resp:
        data = resp.read()
    img = decode(data)
    assert (img.format, img.size) == ("WEBP", (1024, 1536))
    key = out.ref.removeprefix(f"s3://{BUCKET}/")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_moderation_refusal_fails_once_with_its_code(
    redis_url: str, gen_sim: Sim, worker_factory: WorkerFactory
) -> None:
    worker_factory(gen_sim, concurrency=2)
    with Client(Settings(redis_url=redis_url)) as c:
        job = c.generate(f"a {MODERATION_TRIGGER}", quality="low")
        r = c.wait(job, timeout=60)
    assert r.status == "failed" and r.error is not None
    assert (r.error.code, r.error.retryable, r.attempts) == ("moderation_blocked", False, 1)
    assert images_stats(gen_sim)["moderation_blocked"] == 1


def test_bad_options_and_masks_are_refused_at_submit(redis_url: str, gen_sim: Sim) -> None:
    # No worker runs: every one of these fails at submit, without a call.
    with Client(Settings(redis_url=redis_url)) as c:
        wrong_mask = c.edit([picture(64, 48)], "add a hat", mask=mask_png(32, 32))
        no_alpha = c.edit([picture(64, 48)], "add a hat", mask=mask_png(64, 48, alpha=False))
        bad_size = c.generate("a cat", size="512x512")
        dalle_n = c.generate("a cat", model="dall-e-3", n=2)
        results = {j: c.get(j) for j in (wrong_mask, no_alpha, bad_size, dalle_n)}
    codes = {j: (r.status, r.error.code if r and r.error else None) for j, r in results.items()}
    assert codes[wrong_mask] == ("failed", "invalid_image")
    assert codes[no_alpha] == ("failed", "invalid_image")
    assert codes[bad_size] == ("failed", "invalid_job")
    assert codes[dalle_n] == ("failed", "invalid_job")
    wm = results[wrong_mask]
    assert wm is not None and wm.error is not None and "32x32" in wm.error.message
    assert images_stats(gen_sim)["by_model"] == {}  # nothing reached the API


@pytest.mark.slow
def test_images_per_minute_held_across_the_fleet(
    redis_url: str, simulator_factory: Callable[..., Sim], worker_factory: WorkerFactory
) -> None:
    ipm, jobs = 60, 36
    args = fast_sim_args(ipm=ipm)
    args[args.index("--latency-ms") + 1] = "100"
    sim = simulator_factory(*args)
    limits = json.dumps({"gpt-image-1": {"ipm": ipm}})
    for _ in range(2):
        worker_factory(sim, concurrency=8, IMGQ_MODEL_LIMITS=limits)
    with Client(Settings(redis_url=redis_url)) as c:
        # 72 images at 60 IPM: a bucket's worth at once, the last 12 at the refill rate (1/s);
        # without the fleet's IPM reservation those 12 would meet 429s.
        ids = [c.generate(f"tile {i}", n=2, size="1024x1024", quality="low") for i in range(jobs)]
        done = list(c.as_completed(ids, timeout=120))
    assert [r.status for r in done] == ["succeeded"] * jobs, [r.error for r in done]
    assert all(r.attempts == 1 for r in done)
    stats = images_stats(sim)
    assert stats["rate_limited"] == 0
    assert stats["by_model"]["gpt-image-1"]["images"] == 2 * jobs


def test_generate_through_the_responses_image_tool(
    redis_url: str, gen_sim: Sim, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    worker_factory(gen_sim, concurrency=2)
    with Client(Settings(redis_url=redis_url)) as c:
        job = c.generate("a fox", responses_model="gpt-4.1-mini", size="1024x1536",
                         quality="low", output_format="png")  # fmt: skip
        refused = c.generate("a fox", responses_model="gpt-4.1-mini", n=2)
        not_mainline = c.generate("a fox", responses_model="dall-e-3")
        r = c.wait(job, timeout=60)
        (path,) = c.save_images(job, tmp_path)
        bad = [c.get(refused), c.get(not_mainline)]
    assert r.status == "succeeded", r.error
    assert r.model == "gpt-4.1-mini" and r.attempts == 1
    assert r.usage.output_tokens == output_tokens("gpt-image-1", "1024x1536", "low")
    assert r.cost_usd is not None and r.cost_usd > 0
    assert r.images[0].revised_prompt and decode(path.read_bytes()).size == (1024, 1536)
    assert [(b.status, b.error.code) for b in bad if b and b.error] == [
        ("failed", "invalid_job")
    ] * 2
    assert images_stats(gen_sim)["by_model"]["gpt-4.1-mini"]["images"] == 1
