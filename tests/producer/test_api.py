"""The HTTP API served for real (aiohttp test server) in front of Redis, a worker and the simulator."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestClient

from producer import api as api_module
from shared.embedded_redis import free_port
from shared.metrics import Metrics
from shared.settings import Settings
from tests.local_http import ApiFactory
from tests.pipeline.conftest import make_image, sent_hash
from tests.producer.conftest import ImageServer, Stack

IMAGE_LINE = re.compile(r"IMAGE sha256=([0-9a-f]{16})")
PROMPT = "Describe this image."


@pytest.fixture
async def api(stack: Stack, api_factory: ApiFactory) -> TestClient:  # type: ignore[type-arg]
    """The API on the stack's Redis: the worker runs what it enqueues."""
    return await api_factory(Settings(redis_url=stack.redis_url, api_auth="off"))  # type: ignore[no-any-return]


@pytest.fixture
async def idle(stack: Stack, api_factory: ApiFactory) -> tuple[TestClient, redis.Redis, Metrics]:  # type: ignore[type-arg]
    """The API on a database no worker consumes: jobs stay queued, messages can be counted."""
    url = stack.idle_redis_url()
    metrics = Metrics()
    client = await api_factory(Settings(redis_url=url, api_auth="off"), metrics)
    return client, redis.Redis.from_url(url), metrics


def data_url(img: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(img).decode()


async def post_json(client: TestClient, body: Any) -> tuple[int, dict[str, Any]]:  # type: ignore[type-arg]
    resp = await client.post("/v1/jobs", json=body)
    return resp.status, await resp.json()


async def wait_doc(client: TestClient, job_id: str) -> dict[str, Any]:  # type: ignore[type-arg]
    resp = await client.get(f"/v1/jobs/{job_id}", params={"wait": "30"})
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


def hashes(doc: dict[str, Any]) -> list[str]:
    return IMAGE_LINE.findall(doc.get("output_text") or "")


# -- through the worker --------------------------------------------------------------------------
@pytest.mark.slow
async def test_json_data_url_base64_and_loopback_url(
    api: TestClient,  # type: ignore[type-arg]
    image_server: ImageServer,
) -> None:
    a, b, c = make_image(101), make_image(102), make_image(103, size=(80, 40))
    url = image_server.put("c.png", c)
    bodies = [
        {"images": [data_url(a)], "prompt": PROMPT, "metadata": {"n": 1}},
        {"images": [{"base64": base64.b64encode(b).decode(), "detail": "low"}], "prompt": PROMPT},
        {"images": [{"url": url}], "prompt": PROMPT, "api": "responses"},
    ]
    ids = []
    for body in bodies:
        status, doc = await post_json(api, body)
        assert status == 202, doc
        assert doc["status"] in ("queued", "running"), doc
        ids.append(doc["job_id"])
    docs = [await wait_doc(api, i) for i in ids]
    for doc in docs:
        assert doc["status"] == "succeeded", doc
        assert doc["attempts"] == 1
    assert hashes(docs[0]) == [sent_hash(a)]
    assert docs[0]["metadata"] == {"n": 1}
    assert hashes(docs[1]) == [sent_hash(b, detail="low")]
    assert hashes(docs[2]) == [sent_hash(c)]
    assert docs[2]["sources"] == [url]


@pytest.mark.slow
async def test_multipart_with_two_files(api: TestClient) -> None:  # type: ignore[type-arg]
    a, b = make_image(111), make_image(112, size=(50, 70))
    form = aiohttp.FormData()
    form.add_field("image", a, filename="a.png", content_type="image/png")
    form.add_field("image", b, filename="b.png", content_type="image/png")
    form.add_field("prompt", PROMPT)
    form.add_field("detail", "high")
    form.add_field("metadata", json.dumps({"from": "form"}))
    form.add_field("max_output_tokens", "300")
    resp = await api.post("/v1/jobs", data=form)
    doc = await resp.json()
    assert resp.status == 202, doc
    done = await wait_doc(api, doc["job_id"])
    assert done["status"] == "succeeded", done
    assert hashes(done) == [sent_hash(a, detail="high"), sent_hash(b, detail="high")]
    assert done["metadata"] == {"from": "form"}


@pytest.mark.slow
async def test_idempotent_job_id_after_completion(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    img = make_image(121)
    body = {"images": [data_url(img)], "prompt": PROMPT, "job_id": f"api-again-{time.time_ns()}"}
    _, first = await post_json(api, body)
    done = await wait_doc(api, first["job_id"])
    assert done["status"] == "succeeded"
    seen = stack.sim.stats()["image_hashes"].get(sent_hash(img))
    status, again = await post_json(api, {**body, "prompt": "Something else."})
    assert status == 200
    assert again["job_id"] == first["job_id"]
    assert again["status"] == "succeeded"
    assert again["output_text"] == done["output_text"]
    await asyncio.sleep(0.5)
    assert stack.sim.stats()["image_hashes"].get(sent_hash(img)) == seen  # not sent again


# -- no worker needed -----------------------------------------------------------------------------
async def test_wait_returns_the_current_state_when_time_runs_out(idle: Any) -> None:
    client, _, _ = idle
    _, doc = await post_json(client, {"images": [data_url(make_image(1))], "prompt": PROMPT})
    started = time.monotonic()
    resp = await client.get(f"/v1/jobs/{doc['job_id']}", params={"wait": "0.5"})
    assert resp.status == 200
    assert (await resp.json())["status"] == "queued"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("wait", ["nan", "-1", "inf"])
async def test_wait_values_never_hang(idle: Any, wait: str) -> None:
    client, _, _ = idle
    _, doc = await post_json(client, {"images": [data_url(make_image(2))], "prompt": PROMPT})
    resp = await client.get(f"/v1/jobs/{doc['job_id']}", params={"wait": wait})
    # `nan` used to wait forever (a NaN deadline is never passed); non-finite values are refused,
    # a negative one means "do not wait".
    if wait == "-1":
        assert resp.status == 200
        assert (await resp.json())["status"] == "queued"
    else:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_job"


async def test_wait_not_a_number(idle: Any) -> None:
    client, _, _ = idle
    _, doc = await post_json(client, {"images": [data_url(make_image(3))], "prompt": PROMPT})
    resp = await client.get(f"/v1/jobs/{doc['job_id']}", params={"wait": "soon"})
    assert resp.status == 400


async def test_unknown_job_is_404(idle: Any) -> None:
    client, _, _ = idle
    for path in ("/v1/jobs/no-such-job", "/v1/jobs/no-such-job?wait=1"):
        resp = await client.get(path)
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"images": ["x"], "prompt": PROMPT, "colour": "red"}, "unknown field"),
        ({"images": ["x"]}, "prompt"),
        ({"images": ["x"], "prompt": PROMPT, "max_output_tokens": "many"}, "max_output_tokens"),
        ([{"images": ["x"], "prompt": PROMPT}], "JSON object"),
        ({"images": [42], "prompt": PROMPT}, "image"),
        ({"images": [{"detail": "low"}], "prompt": PROMPT}, "url"),
        ({"images": "data:image/png;base64,AAAA", "prompt": PROMPT}, "images"),
        ({"images": {"url": "http://127.0.0.1/a.png"}, "prompt": PROMPT}, "images"),
        ({"images": ["x"], "prompt": 123}, "prompt"),
        ({"images": ["x"], "prompt": PROMPT, "metadata": "{not json"}, ""),
    ],
)
async def test_bad_bodies_are_400(idle: Any, body: Any, needle: str) -> None:
    client, broker, metrics = idle
    status, doc = await post_json(client, body)
    assert status == 400, doc
    assert doc["error"]["code"] == "invalid_job"
    assert needle.lower() in doc["error"]["message"].lower()
    assert broker.llen("interactive") == 0
    assert _submitted(metrics) == 0


async def test_body_that_is_not_json_is_400(idle: Any) -> None:
    client, _, _ = idle
    resp = await client.post(
        "/v1/jobs", data=b"\xff{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_job"


async def test_body_over_the_size_limit_is_413(stack: Stack, api_factory: ApiFactory) -> None:
    client = await api_factory(
        Settings(redis_url=stack.idle_redis_url(), api_auth="off"), max_body_bytes=4096
    )
    blob = "data:image/png;base64," + base64.b64encode(os.urandom(6000)).decode()
    resp = await client.post("/v1/jobs", json={"images": [blob], "prompt": PROMPT})
    assert resp.status == 413
    form = aiohttp.FormData()
    for i in range(3):
        form.add_field(
            "image", make_image(10 + i, size=(40, 40)) + bytes(2000), filename=f"{i}.png"
        )
    form.add_field("prompt", PROMPT)
    resp = await client.post("/v1/jobs", data=form)
    assert resp.status == 413


async def test_local_file_path_is_never_read(idle: Any, tmp_path: Path) -> None:
    client, broker, _ = idle
    path = tmp_path / "secret.png"
    path.write_bytes(make_image(5))
    for image in (str(path), {"url": str(path)}, "file://" + str(path)):
        status, doc = await post_json(client, {"images": [image], "prompt": PROMPT})
        assert status in (202, 400), doc
        if status == 202:
            assert doc["status"] == "failed", doc
            assert doc["error"]["code"] == "invalid_image"
            assert doc["error"]["retryable"] is False
            again = await (await client.get(f"/v1/jobs/{doc['job_id']}")).json()
            assert again["status"] == "failed"
    assert broker.llen("interactive") == 0  # nothing was enqueued


async def test_idempotent_job_id_enqueues_once(idle: Any) -> None:
    client, broker, metrics = idle
    body = {"images": [data_url(make_image(6))], "prompt": PROMPT, "job_id": "order-7"}
    s1, d1 = await post_json(client, body)
    s2, d2 = await post_json(client, {**body, "prompt": "Another prompt."})
    assert (s1, s2) == (202, 200)  # 200: the job already exists
    assert d1["job_id"] == d2["job_id"] == "order-7"
    assert d2["status"] == "queued"
    assert broker.llen("interactive") == 1
    msg = json.loads(broker.lindex("interactive", 0))
    job = json.loads(base64.b64decode(msg["body"]))[0][0]
    assert job["prompt"] == PROMPT  # the first submission stands
    assert job["images"][0]["ref"].startswith("redis:")  # image bytes never travel in messages
    assert _submitted(metrics) == 1  # a resubmission is not a second submitted job


async def test_bulk_priority_goes_to_the_bulk_queue(idle: Any) -> None:
    client, broker, _ = idle
    status, _ = await post_json(
        client, {"images": [data_url(make_image(8))], "prompt": PROMPT, "priority": "bulk"}
    )
    assert status == 202
    assert (broker.llen("bulk"), broker.llen("interactive")) == (1, 0)


def _submitted(metrics: Metrics) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        if family.name == "imgq_jobs_submitted":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


async def test_metrics_count_submitted_jobs(idle: Any) -> None:
    client, _, _ = idle
    for i in range(3):
        status, _ = await post_json(
            client, {"images": [data_url(make_image(20 + i))], "prompt": PROMPT, "model": "gpt-4o"}
        )
        assert status == 202
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    line = re.search(
        r'^imgq_jobs_submitted_total\{model="gpt-4o",priority="interactive"\} (\S+)$', text, re.M
    )
    assert line is not None, text[:2000]
    assert float(line.group(1)) == 3.0


async def test_healthz(idle: Any, api_factory: ApiFactory) -> None:
    client, _, _ = idle
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True}
    dead = await api_factory(
        Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", api_auth="off")
    )
    resp = await dead.get("/healthz")
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "storage_unavailable"


# -- bounded resources (issue 10): no worker, the API on its own Redis ---------------------------
@pytest.fixture
async def bare(api_factory: ApiFactory) -> AsyncIterator[tuple[TestClient, Any]]:  # type: ignore[type-arg]
    """The API on a private Redis with nothing consuming; (client, async Redis for the test).

    A Redis of its own, so connections other tests leave open never count against this one's.
    """
    import redis.asyncio as aioredis

    from shared.embedded_redis import EmbeddedRedis

    with EmbeddedRedis() as server:
        client = await api_factory(Settings(redis_url=server.url, api_auth="off"), body_timeout=2.0)
        r = aioredis.from_url(server.url)
        yield client, r
        await r.aclose()


async def _queued(r: Any, job_ids: list[str]) -> Any:
    from shared.jobs import Result
    from shared.storage import RedisResultStore

    store = RedisResultStore(r, ttl_seconds=3600)
    for j in job_ids:
        await store.create(Result(job_id=j))
    return store


async def _finish(r: Any, store: Any, job_ids: list[str], *, publish: bool = True) -> None:
    from shared.jobs import Result
    from shared.storage import RedisJobEvents

    events = RedisJobEvents(r)
    for j in job_ids:
        await store.put(Result(job_id=j, status="succeeded", output_text=f"done {j}"))
        if publish:
            await events.publish(j, "succeeded")


async def _api_connections(r: Any) -> int:
    """Connections to Redis other than the test's own (those are named)."""
    clients = await r.client_list()
    return sum(1 for c in clients if c.get("name") != "imgq-test")


async def test_400_waiters_share_one_subscription_and_a_few_connections(bare: Any) -> None:
    client, r = bare
    await r.client_setname("imgq-test")
    ids = [f"w-{i}" for i in range(400)]
    store = await _queued(r, ids)
    started = time.monotonic()
    waits = [asyncio.create_task(client.get(f"/v1/jobs/{j}", params={"wait": "20"})) for j in ids]
    await asyncio.sleep(2.0)  # every waiter is in
    assert not any(t.done() for t in waits)
    during = await _api_connections(r)
    await _finish(r, store, ids)
    answers = await asyncio.gather(*waits)
    docs = [await a.json() for a in answers]
    assert [a.status for a in answers] == [200] * 400, docs[:3]
    assert [d["status"] for d in docs] == ["succeeded"] * 400
    assert [d["output_text"] for d in docs] == [f"done {j}" for j in ids]
    assert during <= Settings().api_redis_connections, during
    assert time.monotonic() - started < 15  # events answered them, not the 20 s deadline
    hub = client.server.app[api_module.HUB]
    assert hub.subscriptions == 1 and hub.waiting == 0


async def test_a_missed_event_is_caught_by_the_recheck(bare: Any) -> None:
    client, r = bare
    store = await _queued(r, ["quiet"])
    task = asyncio.create_task(client.get("/v1/jobs/quiet", params={"wait": "10"}))
    await asyncio.sleep(0.5)
    await _finish(r, store, ["quiet"], publish=False)  # no event at all
    resp = await asyncio.wait_for(task, 5)
    assert (await resp.json())["status"] == "succeeded"


async def test_waiters_survive_a_dropped_subscription(bare: Any) -> None:
    client, r = bare
    store = await _queued(r, ["a", "b"])
    first = asyncio.create_task(client.get("/v1/jobs/a", params={"wait": "15"}))
    await asyncio.sleep(1.0)
    killed = await r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed >= 1
    await _finish(r, store, ["a"])  # published while no subscription may exist: re-checked
    resp = await asyncio.wait_for(first, 10)
    assert (await resp.json())["status"] == "succeeded"
    second = asyncio.create_task(client.get("/v1/jobs/b", params={"wait": "15"}))
    await asyncio.sleep(0.5)
    await _finish(r, store, ["b"])
    resp = await asyncio.wait_for(second, 10)
    assert (await resp.json())["status"] == "succeeded"
    # Subscribed again (redis-py reconnects a pub/sub by itself; the hub resubscribes if not).
    subscribed = [c for c in await r.client_list() if c.get("sub") == "1"]
    assert len(subscribed) == 1


async def test_a_trickled_body_is_cut_with_408(bare: Any) -> None:
    client, _ = bare
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    await writer.drain()
    started = time.monotonic()

    async def trickle() -> None:  # 1 byte every 5 s, as a hostile caller would
        while True:
            await asyncio.sleep(5)
            writer.write(b" ")
            await writer.drain()

    dripping = asyncio.create_task(trickle())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        elapsed = time.monotonic() - started
        length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        body = json.loads(await reader.readexactly(length))
    finally:
        dripping.cancel()
        writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    assert body["error"]["code"] == "request_timeout"
    assert 1.5 < elapsed < 6, elapsed  # the 2 s body timeout, not the caller's pace


async def test_healthz_does_not_depend_on_any_job_id(bare: Any) -> None:
    client, r = bare
    # Whatever a caller stores under any id (here an unreadable record named like the old probe)
    await r.set("imgq:result:healthz-probe", b"{not json", ex=3600)
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True}


def _nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(depth):
        doc = {"a": doc}
    return doc


@pytest.mark.parametrize("raw", [b"{not json", "deep"])
async def test_unreadable_stored_result_is_a_typed_error_not_500(bare: Any, raw: Any) -> None:
    client, r = bare
    if raw == "deep":  # metadata nested past the parser's depth limit (issue 9's probe)
        raw = json.dumps({"job_id": "bad", "status": "queued", "metadata": _nested(210)})
    await r.set("imgq:result:bad", raw, ex=3600)
    for params in ({}, {"wait": "1"}):
        resp = await client.get("/v1/jobs/bad", params=params)
        assert resp.status == 502, await resp.text()
        assert (await resp.json())["error"]["code"] == "result_unreadable"
    body = {"images": [data_url(make_image(9))], "prompt": PROMPT, "job_id": "bad"}
    status, doc = await post_json(client, body)
    assert status == 502 and doc["error"]["code"] == "result_unreadable"
