"""Storage outages with real processes: the result store (S3) cut for 30 s as answers arrive, and
Redis (append-only, everysec) killed and restarted mid-run. Each test prints its figures.

Run: ``pytest -s -m slow tests/pipeline/test_outages.py`` (figures in RELIABILITY.md).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from producer.client import Client, SubmitRequest
from shared.embedded_redis import EmbeddedRedis, free_port
from shared.jobs import Result
from shared.settings import Settings
from tests.conftest import Sim
from tests.pipeline.conftest import WorkerFactory, make_image, wait_for_worker
from tests.pipeline.proxy import CuttableProxy
from tests.pipeline.test_chaos import paid_twice, wait_until

pytestmark = pytest.mark.slow
PROMPT = "Describe this image."
ROOMY = json.dumps({"gpt-4.1-mini": {"tpm": 10_000_000, "rpm": 100_000}})
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
BUCKET = "imgq-chaos"


@pytest.fixture
def s3_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    from moto.server import ThreadedMotoServer

    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket=BUCKET)
    yield port
    server.stop()


def test_paid_answers_wait_for_the_result_store(
    redis_url: str,
    s3_port: int,
    simulator_factory: Callable[..., Sim],
    worker_factory: WorkerFactory,
) -> None:
    """S3 (the result store) unreachable for 30 s while 8 answers arrive."""
    proxy = CuttableProxy(s3_port)
    endpoint = f"http://127.0.0.1:{proxy.port}"
    sim = simulator_factory("--latency-ms", "3000", "--jitter-ms", "0")
    s3_env = {"IMGQ_RESULT_BACKEND": "s3", "IMGQ_S3_BUCKET": BUCKET,
              "IMGQ_S3_ENDPOINT_URL": endpoint, **AWS}  # fmt: skip
    worker_factory(sim, concurrency=16, IMGQ_MODEL_LIMITS=ROOMY, **s3_env)
    settings = Settings(
        redis_url=redis_url, result_backend="s3", s3_bucket=BUCKET, s3_endpoint_url=endpoint
    )
    images = [make_image(4000 + i) for i in range(8)]
    with Client(settings) as c:
        ids = c.submit_many(SubmitRequest(images=[img], prompt=PROMPT) for img in images)
        wait_until(lambda: sim.stats()["in_flight"] >= len(ids), 30, "calls did not start")
        proxy.cut()
        cut_at = time.monotonic()
        wait_until(lambda: sim.stats()["completed"] >= len(ids), 30, "answers did not arrive")
        time.sleep(max(0.0, 30 - (time.monotonic() - cut_at)))
        proxy.restore()
        back_at = time.monotonic()
        results = list(c.as_completed(ids, timeout=60))
        stored_in = time.monotonic() - back_at
    dup = paid_twice(sim)
    print(
        f"\nresult store down 30 s: {len(ids)} answers arrived while it was unreachable; "
        f"{sum(r.status == 'succeeded' for r in results)} stored {stored_in:.1f} s after it came "
        f"back; calls repeated: {dup}; attempts {sorted({r.attempts for r in results})}"
    )
    assert all(r.status == "succeeded" for r in results), [r.error for r in results]
    assert dup == 0 and all(r.attempts == 1 for r in results)


def _supervise(
    start: Callable[[], object], procs: list, stop: threading.Event, exits: list[int]
) -> None:
    """What compose's `restart: unless-stopped` does: a worker that exits is started again."""
    while not stop.is_set():
        for i, p in enumerate(procs):
            if p.poll() is not None:
                exits.append(p.returncode)
                procs[i] = start()
        time.sleep(0.5)


def _describe_unfinished(url: str, ids: list[str], finished: set[str]) -> dict[str, int]:
    """Where the unfinished jobs are: state, lease, message (for the report)."""
    import collections

    import redis

    r = redis.Redis.from_url(url)

    def bodies(raws: list[bytes]) -> bytes:
        out = b""
        for raw in raws:
            doc = json.loads(raw)
            doc = doc[0] if isinstance(doc, list) else doc  # unacked: [message, exchange, key]
            out += base64.b64decode(doc["body"])
        return out

    in_queue = bodies(r.lrange("interactive", 0, -1))
    unacked = bodies(r.hvals("unacked"))
    out: collections.Counter[str] = collections.Counter()
    for j in ids:
        if j in finished:
            continue
        st = r.hget(f"imgq:job:{j}", "status")
        lock = r.exists(f"imgq:lock:{j}")
        msg = "queue" if j.encode() in in_queue else "unacked" if j.encode() in unacked else "none"
        out[f"{st!r} lock={lock} msg={msg}"] += 1
    return dict(out)


@pytest.mark.timeout(600)
def test_redis_killed_and_restarted_mid_run(
    tmp_path: Path, simulator_factory: Callable[..., Sim], worker_factory: WorkerFactory
) -> None:
    """200 jobs, two workers, Redis SIGKILLed with calls in flight, back 10 s later (same AOF)."""
    server = EmbeddedRedis(data_dir=tmp_path / "redis").start()
    sim = simulator_factory("--latency-ms", "4000", "--jitter-ms", "1000", "--tpm", "10000000",
                            "--rpm", "100000")  # fmt: skip
    env = {"IMGQ_REDIS_URL": server.url, "IMGQ_MODEL_LIMITS": ROOMY}

    def start() -> object:
        proc = worker_factory(sim, concurrency=24, wait_for_bindings=False, **env)
        wait_for_worker(server.url)
        return proc

    procs = [start(), start()]
    stop, exits = threading.Event(), []  # type: ignore[var-annotated]
    sup = threading.Thread(target=_supervise, args=(start, procs, stop, exits), daemon=True)
    images = [make_image(5000 + i) for i in range(200)]
    got: list[Result] = []
    errors: list[BaseException] = []
    try:
        with Client(Settings(redis_url=server.url)) as c:
            ids = c.submit_many(SubmitRequest(images=[img], prompt=PROMPT) for img in images)
            submitted_at = time.monotonic()

            def wait_all() -> None:
                try:
                    got.extend(c.as_completed(ids, timeout=300))
                except BaseException as exc:
                    errors.append(exc)

            waiter = threading.Thread(target=wait_all)
            waiter.start()
            wait_until(lambda: sim.stats()["completed"] >= 50, 60, "jobs did not run")
            in_flight = sim.stats()["in_flight"]
            assert time.monotonic() - submitted_at > 1  # acknowledged > 1 s before the kill
            server.kill()
            killed_at = time.monotonic()
            time.sleep(10)
            server.start()
            sup.start()
            waiter.join(320)
            recovered_in = time.monotonic() - killed_at
            stop.set()
            sup.join()
            alive_through = all(p.poll() is None for p in procs) and not exits
            stuck = _describe_unfinished(server.url, ids, {r.job_id for r in got})
    finally:
        stop.set()
        server.stop()
    logs = "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("worker*.log")))
    unrecoverable = re.findall(r"Unrecoverable error: ([^\n]{0,120})", logs)
    ok = sum(r.status == "succeeded" for r in got)
    dup = paid_twice(sim)
    print(
        f"\nRedis kill -9 + restart after 10 s: {in_flight} calls in flight at the kill; workers "
        f"{'stayed up' if alive_through else f'exited {len(exits)} times (codes {exits})'}; "
        f"unrecoverable errors logged: {unrecoverable[:2]}; waiting client received "
        f"{len(got)}/200 ({ok} succeeded) {recovered_in:.0f} s after the kill; lost "
        f"{200 - ok}; paid twice {dup}; client error: {errors[:1]}; unfinished: {stuck}"
    )
    assert dup == 0  # nothing paid twice, whatever else happened
    assert alive_through, unrecoverable  # the workers reconnected (no supervisor restart)
    assert all(isinstance(e, TimeoutError) for e in errors)  # the client waited through it
    assert not errors and ok == 200
