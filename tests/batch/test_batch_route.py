"""The batch route end to end: real Redis, real `imgq worker` processes, the simulator over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from producer.client import Client, SubmitRequest
from shared.catalogue import builtin_catalogue
from shared.embedded_redis import free_port
from shared.jobs import Result
from shared.settings import Settings
from tests.batch.conftest import sim_batch
from tests.conftest import Sim
from tests.pipeline.conftest import make_image as _base_image
from tests.pipeline.conftest import sent_hash

PROMPT = "Grade this test paper."


def make_image(i: int) -> bytes:
    """A distinct small page per ``i`` (< 65,536): two pixels spell the number."""
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(_base_image(i)))
    im.putpixel((1, 1), (i % 256, i // 256, 7))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


MODEL = "gpt-4.1-mini"


def _submit(
    redis_url: str, n: int, first: int = 0, settings: dict[str, Any] | None = None, **opts: Any
) -> tuple[Client, list[str]]:
    c = Client(Settings(redis_url=redis_url, **(settings or {})))
    reqs = [
        SubmitRequest(
            images=[make_image(first + i)], prompt=PROMPT, model=MODEL, route="batch",
            priority="bulk", max_output_tokens=200, metadata={"i": first + i}, **opts,
        )
        for i in range(n)
    ]  # fmt: skip
    return c, c.submit_many(reqs)


ONE_BATCH = {"IMGQ_BATCH_LINGER_SECONDS": "3600"}  # sent only by _flush_when_queued


def _flush_when_queued(redis_url: str, ids: list[str]) -> None:
    """Once every job waits for a batch, ask for a flush (as `imgq batches flush` does): the
    jobs go as one batch, however slowly the workers prepared them."""
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while not all(r.exists(f"imgq:bq:member:{j}") for j in ids):
        assert time.monotonic() < deadline, "jobs not queued for a batch"
        time.sleep(0.05)
    r.set("imgq:bq:flush", "1")


def _check_answered(results: list[Result], first: int = 0) -> None:
    cat = builtin_catalogue()
    for r in results:
        i = r.metadata["i"]
        assert r.status == "succeeded", r.error
        assert f"sha256={sent_hash(make_image(i), MODEL)}" in (r.output_text or "")
        assert r.route == "batch" and r.batch_id and r.batch_id.startswith("ib_")
        online = cat.cost_usd(MODEL, r.usage.input_tokens, r.usage.output_tokens)
        assert online and r.cost_usd == pytest.approx(online / 2)
        assert r.usage.input_tokens == r.usage.estimated_input_tokens


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("imgq_")
    }


def _batches(redis_url: str) -> list[dict[str, str]]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ids = r.zrange("imgq:bq:batches", 0, -1)
    return [r.hgetall(f"imgq:bq:batch:{b}") for b in ids]


def test_jobs_through_the_batch_api_across_two_workers(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    ports = [free_port(), free_port()]
    for port in ports:
        batch_workers(bsim, IMGQ_METRICS_PORT=str(port))
    n = 60
    c, ids = _submit(redis_url, n)
    with c:
        results = list(c.as_completed(ids, timeout=120))
    assert len(results) == n
    _check_answered(results)
    saved = sum(r.cost_usd or 0.0 for r in results)  # half price: saved as much as paid
    time.sleep(1)  # a batcher tick after the last job: gauges report the drained state
    scraped = [_metrics(p) for p in ports]
    assert sum(m.get("imgq_batch_savings_usd_total", 0.0) for m in scraped) == pytest.approx(saved)
    assert all(m.get('imgq_jobs_waiting{route="batch"}', 0.0) == 0.0 for m in scraped)
    assert any('imgq_batches{status="in_progress"}' in m for m in scraped)
    counters = sim_batch(bsim)
    batches = _batches(redis_url)
    assert counters["lines_answered"] == n  # each job answered once
    assert all(v == 1 for v in counters["images_seen"].values())
    assert counters["uploads"] == counters["batches_created"] == len(batches)
    assert all(b["state"] == "done" for b in batches)
    assert sum(int(b["succeeded"]) for b in batches) == n


def _wait_for(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def _leader_pid(redis_url: str) -> int:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    token = r.get("imgq:bq:leader")
    assert token, "no batcher leader"
    return int(token.split(":")[1])


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGSTOP"])
@pytest.mark.parametrize(
    ("fault", "state", "counter"),
    [("upload_delay_s", "uploading", "uploads"), ("create_delay_s", "creating", "batches_created")],
)
def test_leader_killed_mid_step_resumes_without_repeating_it(
    bsim: Sim,
    redis_url: str,
    batch_workers: Callable[..., Any],
    fault: str,
    state: str,
    counter: str,
    sig: str,
) -> None:
    """kill -9 (or pause) after the upload (or creation) reached OpenAI, before the batcher
    recorded it: the next leader finds the file (or batch) instead of making a second one, and
    a paused leader that wakes up afterwards changes nothing."""
    sim_batch(bsim, **{fault: 30.0})
    procs = {batch_workers(bsim, **ONE_BATCH).pid: None, batch_workers(bsim, **ONE_BATCH).pid: None}
    n = 30
    c, ids = _submit(redis_url, n)
    _flush_when_queued(redis_url, ids)

    def mid_step() -> bool:
        b = _batches(redis_url)
        return bool(b) and b[0]["state"] == state and sim_batch(bsim)[counter] == 1

    _wait_for(mid_step, what=f"batch in {state}")
    leader = _leader_pid(redis_url)
    assert leader in procs
    import os
    import signal

    os.kill(leader, getattr(signal, sig))
    sim_batch(bsim, **{fault: 0.0})
    with c:
        results = list(c.as_completed(ids, timeout=120))
    _check_answered(results)
    if sig == "SIGSTOP":
        os.kill(leader, signal.SIGCONT)  # the old leader wakes up mid-step
        time.sleep(3)
        with Client(Settings(redis_url=redis_url)) as c2:
            assert [x.model_dump() for x in results] == [
                c2.wait(x.job_id, timeout=5).model_dump() for x in results
            ]
    counters = sim_batch(bsim)
    assert counters["uploads"] == 1 and counters["batches_created"] == 1
    assert counters["lines_answered"] == n
    assert _leader_pid(redis_url) != leader
    (b,) = _batches(redis_url)
    assert b["state"] == "done" and int(b["succeeded"]) == n


def test_expired_batch_reroutes_unfinished_jobs_online(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    """The half the batch never reached is answered online, although by then the jobs' images
    have expired from the image store and their deadline has passed (a real batch expires after
    24 h: both are long gone)."""
    sim_batch(bsim, expire_next=1, concurrency=1, progress_s=5)
    batch_workers(bsim, **ONE_BATCH)
    n = 10
    c, ids = _submit(redis_url, n, settings={"image_ttl_seconds": 3})  # deadline: 3 s too
    _flush_when_queued(redis_url, ids)
    with c:
        results = list(c.as_completed(ids, timeout=120))
    assert all(r.status == "succeeded" for r in results)
    by_route = {"batch": [r for r in results if r.route == "batch"],
                "online": [r for r in results if r.route == "online"]}  # fmt: skip
    assert len(by_route["batch"]) == sim_batch(bsim)["lines_answered"] == n // 2
    assert len(by_route["online"]) == n // 2
    _check_answered(by_route["batch"])
    for r in by_route["online"]:  # answered by the online API at the online price
        assert f"sha256={sent_hash(make_image(r.metadata['i']), MODEL)}" in (r.output_text or "")
        online = builtin_catalogue().cost_usd(MODEL, r.usage.input_tokens, r.usage.output_tokens)
        assert r.cost_usd == pytest.approx(online)
    (b,) = _batches(redis_url)
    assert b["openai_status"] == "expired" and int(b["rerouted"]) == n // 2


def test_expired_batch_fails_its_jobs_when_fallback_is_fail(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    sim_batch(bsim, expire_next=1, concurrency=1)
    batch_workers(bsim, IMGQ_BATCH_FALLBACK="fail", **ONE_BATCH)
    c, ids = _submit(redis_url, 6)
    _flush_when_queued(redis_url, ids)
    with c:
        results = list(c.as_completed(ids, timeout=120))
    codes = sorted(r.error.code if r.error else r.status for r in results)
    assert codes == ["batch_expired"] * 3 + ["succeeded"] * 3


def test_per_line_errors_land_on_the_right_jobs(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    batch_workers(bsim)
    c = Client(Settings(redis_url=redis_url))
    ids = [f"job-{i}" for i in range(8)]
    sim_batch(bsim, fail_lines={"job-2": 400, "job-5": 500})
    c.submit_many(
        SubmitRequest(images=[make_image(i)], prompt=PROMPT, model=MODEL, route="batch",
                      job_id=job_id, max_output_tokens=200, metadata={"i": i})
        for i, job_id in enumerate(ids)
    )  # fmt: skip
    with c:
        results = {r.job_id: r for r in c.as_completed(ids, timeout=120)}
    bad = results.pop("job-2")
    assert bad.status == "failed" and bad.error and bad.error.code == "invalid_image"
    assert bad.route == "batch"
    retried = results.pop("job-5")  # a 5xx line is worth retrying: online, by default
    assert retried.status == "succeeded" and retried.route == "online"
    _check_answered(list(results.values()))


@pytest.mark.slow
def test_thousand_jobs_across_two_workers_each_answered_once_at_half_price(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    batch_workers(bsim, IMGQ_BATCH_MAX_REQUESTS="400")  # several batches, sealed when full
    batch_workers(bsim, IMGQ_BATCH_MAX_REQUESTS="400")
    n = 1000
    c, ids = _submit(redis_url, n)
    with c:
        results = list(c.as_completed(ids, timeout=300))
    assert sorted(r.job_id for r in results) == sorted(ids)
    _check_answered(results)
    counters = sim_batch(bsim)
    batches = _batches(redis_url)
    assert counters["lines_answered"] == n and len(counters["images_seen"]) == n
    assert all(v == 1 for v in counters["images_seen"].values())
    assert counters["uploads"] == counters["batches_created"] == len(batches) >= 3
    assert all(int(b["jobs"]) <= 400 for b in batches)


def test_enqueued_token_limit_is_learned_and_batches_split_under_it(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    c, ids = _submit(redis_url, 1)  # measure one job's prompt tokens first
    batch_workers(bsim, **ONE_BATCH)
    _flush_when_queued(redis_url, ids)
    with c:
        (one,) = list(c.as_completed(ids, timeout=60))
    per_job = one.usage.input_tokens
    limit = per_job * 4 + per_job // 2  # room for 4 jobs at a time
    sim_batch(bsim, enqueued_token_limit=limit)
    c, ids = _submit(redis_url, 12, first=100)
    _flush_when_queued(redis_url, ids)
    with c:
        results = list(c.as_completed(ids, timeout=120))
    _check_answered(results)  # all through the Batch API, none fell back online
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert (
        int(r.get(f"imgq:bq:limit:{r.hget('imgq:bq:batch:' + one.batch_id, 'account')}|{MODEL}"))
        == limit
    )
    sent = [b for b in _batches(redis_url) if b.get("split") != "1" and b["id"] != one.batch_id]
    assert len(sent) >= 3 and all(int(b["tokens"]) <= limit for b in sent)
    assert sim_batch(bsim)["by_status"]["failed"] == 1  # only the first, over-limit, attempt


def test_route_auto_sends_bulk_jobs_to_the_batch_api_when_enabled(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    batch_workers(bsim, IMGQ_BATCH_AUTO="true")
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(
            SubmitRequest(images=[make_image(200 + i)], prompt=PROMPT, model=MODEL, route="auto",
                          priority=priority, max_output_tokens=200, metadata={"i": 200 + i})
            for i, priority in enumerate(("bulk", "interactive"))
        )  # fmt: skip
        bulk, interactive = (c.wait(j, timeout=60) for j in ids)
    _check_answered([bulk])
    assert interactive.status == "succeeded" and interactive.route != "batch"
    assert interactive.batch_id is None and sim_batch(bsim)["lines_answered"] == 1


def test_the_reconciler_leaves_jobs_waiting_in_a_batch_alone(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    """A batch outlasting the reconciler's stale bound and the jobs' deadline: still answered."""
    sim_batch(bsim, progress_s=8)
    batch_workers(bsim, IMGQ_RECONCILE_INTERVAL_SECONDS="0.5", IMGQ_RECONCILE_STALE_SECONDS="3")
    c, ids = _submit(redis_url, 4, first=400, deadline_seconds=4)
    with c:
        results = list(c.as_completed(ids, timeout=60))
    _check_answered(results)
    assert sim_batch(bsim)["lines_answered"] == 4


def test_a_failed_upload_is_retried_with_backoff(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    sim_batch(bsim, fail_uploads=2)  # the next two uploads answer 500
    batch_workers(bsim, **ONE_BATCH)
    c, ids = _submit(redis_url, 5, first=500)
    _flush_when_queued(redis_url, ids)
    with c:
        results = list(c.as_completed(ids, timeout=60))
    _check_answered(results)
    counters = sim_batch(bsim)
    assert counters["uploads"] == 1 and counters["settings"]["fail_uploads"] == 0
    (b,) = _batches(redis_url)
    assert "InternalServerError" in b["last_error"] and b["errors"] == "0"
