"""`imgq submit --route batch` and `imgq batches list | show | cancel | flush`, with real workers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner

from imgq.cli import main
from producer.client import Client
from shared.settings import Settings
from tests.batch.conftest import sim_batch
from tests.batch.test_batch_route import MODEL, ONE_BATCH, _flush_when_queued, make_image
from tests.conftest import Sim


def _imgq(redis_url: str, *args: str) -> Any:
    result = CliRunner().invoke(main, list(args), env={"IMGQ_REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    return result


def _wait_for(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def test_submit_route_batch_waits_for_flush_then_list_and_show(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any], tmp_path: Path
) -> None:
    batch_workers(bsim, IMGQ_BATCH_LINGER_SECONDS="3600")  # only a flush sends them
    for i in range(3):
        (tmp_path / f"page{i}.png").write_bytes(make_image(i))
    out = _imgq(redis_url, "submit", str(tmp_path), "-p", "Grade it.", "-m", MODEL,
                "--route", "batch", "--max-output-tokens", "100")  # fmt: skip
    ids = out.stdout.split()
    assert len(ids) == 3
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    _wait_for(lambda: all(r.exists(f"imgq:bq:member:{j}") for j in ids))
    listed = _imgq(redis_url, "batches", "list")
    assert "no batches yet" in listed.stdout and "3 job(s) waiting" in listed.stderr
    _imgq(redis_url, "batches", "flush")
    with Client(Settings(redis_url=redis_url)) as c:
        results = list(c.as_completed(ids, timeout=60))
    assert {x.status for x in results} == {"succeeded"} and {x.route for x in results} == {"batch"}
    (bid,) = {x.batch_id for x in results}
    table = _imgq(redis_url, "batches", "list").stdout
    assert bid in table and "done" in table and "completed" in table
    shown = json.loads(_imgq(redis_url, "batches", "show", bid).stdout)
    assert shown["outcomes"] == {"succeeded": 3} and shown["openai_batch_id"].startswith("batch_")


def test_cancel_a_batch_fails_its_unanswered_jobs(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    sim_batch(bsim, line_delay_s=30, concurrency=1)
    batch_workers(bsim, **ONE_BATCH)
    from producer.client import SubmitRequest

    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(
            SubmitRequest(images=[make_image(i)], prompt="Grade it.", model=MODEL,
                          route="batch", max_output_tokens=100)
            for i in range(4)
        )  # fmt: skip
        _flush_when_queued(redis_url, ids)
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        bid = _wait_for(lambda: next(iter(r.zrange("imgq:bq:batches", 0, -1)), None))
        _wait_for(lambda: r.hget(f"imgq:bq:batch:{bid}", "openai_status") == "in_progress")
        assert "cancel requested" in _imgq(redis_url, "batches", "cancel", bid).stdout
        results = list(c.as_completed(ids, timeout=60))
    assert {x.error.code for x in results if x.error} == {"batch_cancelled"}
    assert len([x for x in results if x.status == "failed"]) == 4
    assert r.hget(f"imgq:bq:batch:{bid}", "openai_status") == "cancelled"
    result = CliRunner().invoke(main, ["batches", "cancel", bid], env={"IMGQ_REDIS_URL": redis_url})
    assert result.exit_code != 0 and "no unfinished batch" in result.output


async def test_http_api_accepts_route_batch(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    import base64

    from aiohttp.test_utils import TestClient, TestServer

    from producer.api import create_app

    batch_workers(bsim, IMGQ_BATCH_LINGER_SECONDS="0.5")
    img = base64.b64encode(make_image(7)).decode()
    app = create_app(Settings(redis_url=redis_url, api_auth="off"))
    async with TestClient(TestServer(app)) as api:
        body = {"images": [img], "prompt": "Grade it.", "model": MODEL, "route": "batch"}
        resp = await api.post("/v1/jobs", json=body)
        job_id = (await resp.json())["job_id"]
        doc = await (await api.get(f"/v1/jobs/{job_id}?wait=30")).json()
        assert doc["status"] == "succeeded" and doc["route"] == "batch", doc
        bad = await (await api.post("/v1/jobs", json={**body, "route": "later"})).json()
        assert bad["status"] == "failed" and bad["error"]["code"] == "invalid_job", bad
        assert "route" in bad["error"]["message"]


def _cancel_job(redis_url: str, job_id: str) -> str:
    """Cancel a job the way the HTTP API's DELETE /v1/jobs/{id} does (producer/tenant_jobs.py)."""
    import asyncio

    import redis.asyncio as aioredis

    from producer.tenant_jobs import TenantJobs

    async def go() -> str:
        r = aioredis.Redis.from_url(redis_url)
        try:
            return await TenantJobs(r, ttl_seconds=3600).cancel(job_id)
        finally:
            await r.aclose()

    return asyncio.run(go())


def test_cancelled_jobs_are_not_sent_and_a_batch_is_cancelled_only_when_all_its_jobs_are(
    bsim: Sim, redis_url: str, batch_workers: Callable[..., Any]
) -> None:
    from producer.client import SubmitRequest

    batch_workers(bsim, IMGQ_BATCH_LINGER_SECONDS="3600")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    with Client(Settings(redis_url=redis_url)) as c:
        ids = c.submit_many(
            SubmitRequest(images=[make_image(300 + i)], prompt="Grade it.", model=MODEL,
                          route="batch", max_output_tokens=100)
            for i in range(4)
        )  # fmt: skip
        _wait_for(lambda: all(r.exists(f"imgq:bq:member:{j}") for j in ids))
        # Cancelled while waiting for a batch: never sent; the other jobs are unaffected.
        assert _cancel_job(redis_url, ids[0]) == "cancelled"
        sim_batch(bsim, line_delay_s=30, concurrency=1)
        _imgq(redis_url, "batches", "flush")
        bid = _wait_for(lambda: next(iter(r.zrange("imgq:bq:batches", 0, -1)), None))
        _wait_for(lambda: r.hget(f"imgq:bq:batch:{bid}", "openai_status") == "in_progress")
        assert r.hget(f"imgq:bq:batch:{bid}", "jobs") == "3"
        assert ids[0] not in r.hkeys(f"imgq:bq:batch:{bid}:jobs")
        # Two of its three jobs cancelled: the batch goes on.
        assert [_cancel_job(redis_url, j) for j in ids[1:3]] == ["cancelled"] * 2
        time.sleep(2)
        assert r.hget(f"imgq:bq:batch:{bid}", "openai_status") == "in_progress"
        assert not r.hget(f"imgq:bq:batch:{bid}", "cancel_requested")
        # The last one too: now the batch is cancelled at the API.
        assert _cancel_job(redis_url, ids[3]) == "cancelled"
        _wait_for(lambda: r.hget(f"imgq:bq:batch:{bid}", "state") == "done", timeout=30)
    assert r.hget(f"imgq:bq:batch:{bid}", "openai_status") == "cancelled"
    assert sim_batch(bsim)["lines_answered"] == 0
