"""`imgq dlq list | show | retry | purge` against a real Redis (no worker needed)."""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner

from producer.client import Client
from producer.dlq_cmd import dlq
from shared.dlq import DLQ_KEY
from shared.jobstate import state_key
from shared.settings import Settings
from tests.pipeline.conftest import make_image


def test_dlq_commands(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_REDIS_URL", redis_url)
    r = redis.Redis.from_url(redis_url)
    with Client(Settings(redis_url=redis_url)) as c:
        job_id = c.submit([make_image(7000)], "Describe this image.")
    r.delete("interactive")  # as if a worker had taken it and dead-lettered it
    r.hset(state_key(job_id), mapping={"status": "failed", "deliveries": 5})
    r.zadd(DLQ_KEY, {job_id: 1_700_000_000.0})
    run = CliRunner().invoke
    listed = run(dlq, ["list"])
    assert listed.exit_code == 0 and job_id in listed.output and "5" in listed.output
    shown = json.loads(run(dlq, ["show", job_id]).output)
    assert shown["dead_lettered"] and shown["spec"]["job_id"] == job_id
    assert shown["state"]["deliveries"] == "5"
    retried = run(dlq, ["retry", job_id])
    assert retried.exit_code == 0, retried.output
    assert f"{job_id}: queued again" in retried.output
    assert r.zscore(DLQ_KEY, job_id) is None and r.llen("interactive") == 1
    assert r.hget(state_key(job_id), "deliveries") == b"0"
    assert r.hget(state_key(job_id), "status") == b"queued"
    r.zadd(DLQ_KEY, {"a": 1.0, "b": 2.0})
    purged = run(dlq, ["purge", "--yes"])
    assert "2 entries removed" in purged.output and r.zcard(DLQ_KEY) == 0
    assert "empty" in run(dlq, ["list"]).output
