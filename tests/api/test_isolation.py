"""Cross-tenant probes over real HTTP with a real worker: every one is denied (404, never 403).

Reads, waits, events, cancels, listing, idempotent re-submits and dedup stay in the caller's
namespace; results never echo URL credentials or query strings.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ApiStack, job, wait_done
from tests.pipeline.conftest import make_image


def _not_found(resp: object, job_id: str) -> None:
    assert resp.status_code == 404, resp.text  # type: ignore[attr-defined]
    assert resp.json()["error"]["code"] == "not_found"  # type: ignore[attr-defined]


def test_another_tenants_job_is_answered_like_a_missing_one(api_stack: ApiStack) -> None:
    a, b = api_stack.client("tenant-a"), api_stack.client("tenant-b")
    # A bulk job stays queued (the stack's worker consumes interactive only): cancellable.
    resp = a.post("/v1/jobs", json=job(make_image(11), job_id="secret-1", priority="bulk",
                                      metadata={"customer": "acme"}))  # fmt: skip
    assert resp.status_code == 202, resp.text
    for probe in (
        b.get("/v1/jobs/secret-1"),
        b.get("/v1/jobs/secret-1", params={"wait": "1"}),
        b.get("/v1/jobs/secret-1/events"),
        b.delete("/v1/jobs/secret-1"),
        b.get("/v1/jobs/secret-1/images/0"),
    ):
        _not_found(probe, "secret-1")
    missing = b.get("/v1/jobs/never-was")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == set(b.get("/v1/jobs/secret-1").json()["error"])
    listed = b.get("/v1/jobs", params={"limit": "100"}).json()["jobs"]
    assert "secret-1" not in [d["job_id"] for d in listed]
    assert "acme" not in b.get("/v1/jobs", params={"limit": "100"}).text
    # The owner still sees its job, untouched by the probes.
    mine = a.get("/v1/jobs/secret-1").json()
    assert mine["status"] == "queued" and mine["metadata"] == {"customer": "acme"}


def test_the_same_job_id_in_two_tenants_is_two_jobs(api_stack: ApiStack) -> None:
    a, b = api_stack.client("tenant-a"), api_stack.client("tenant-b")
    # The attacker takes the id first; the owner still gets a new job of its own (202, not 200).
    first = b.post("/v1/jobs", json=job(make_image(12), job_id="order-7",
                                        metadata={"by": "attacker"}))  # fmt: skip
    assert first.status_code == 202, first.text
    owner = a.post("/v1/jobs", json=job(make_image(13), job_id="order-7", metadata={"by": "owner"}))
    assert owner.status_code == 202, owner.text
    assert owner.json()["job_id"] == "order-7" and owner.json()["metadata"] == {"by": "owner"}
    # An idempotent re-submit is answered from the caller's own namespace (200, its own job).
    again = a.post("/v1/jobs", json=job(make_image(14), job_id="order-7"))
    assert again.status_code == 200 and again.json()["metadata"] == {"by": "owner"}
    done_a, done_b = wait_done(a, "order-7"), wait_done(b, "order-7")
    assert done_a["metadata"] == {"by": "owner"} and done_b["metadata"] == {"by": "attacker"}
    assert done_a["status"] == done_b["status"] == "succeeded"


def test_dedup_never_crosses_tenants(api_stack: ApiStack) -> None:
    a, b = api_stack.client("tenant-a"), api_stack.client("tenant-b")
    img = make_image(15)
    calls = api_stack.sim.stats()["admitted_requests"]
    first = wait_done(a, a.post("/v1/jobs", json=job(img, metadata={"m": 1})).json()["job_id"])
    other = wait_done(b, b.post("/v1/jobs", json=job(img)).json()["job_id"])
    assert first["status"] == other["status"] == "succeeded"
    assert other["dedup_of"] is None  # B paid its own call: A's job is not revealed
    assert api_stack.sim.stats()["admitted_requests"] == calls + 2
    # Within one tenant, dedup works as before and names the tenant's own job id.
    same = wait_done(a, a.post("/v1/jobs", json=job(img)).json()["job_id"])
    assert same["dedup_of"] == first["job_id"] and same["cost_usd"] == 0.0
    assert api_stack.sim.stats()["admitted_requests"] == calls + 2


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tmp_path), **k
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    (tmp_path / "cat.png").write_bytes(make_image(16))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_results_never_echo_credentials_or_query_strings(
    api_stack: ApiStack, image_server: str
) -> None:
    a = api_stack.client("tenant-a")
    url = f"http://user:hunter2@{image_server}/cat.png?X-Amz-Signature=SIGSECRET#frag"
    resp = a.post("/v1/jobs", json={"images": [{"url": url}], "prompt": "What is it?"})
    assert resp.status_code == 202, resp.text
    for text in (resp.text, a.get(f"/v1/jobs/{resp.json()['job_id']}?wait=30").text):
        assert "hunter2" not in text and "SIGSECRET" not in text and "frag" not in text
    done = wait_done(a, resp.json()["job_id"])
    assert done["sources"] == [f"http://{image_server}/cat.png"]
    listed = a.get("/v1/jobs", params={"limit": "100"}).text
    assert "hunter2" not in listed and "SIGSECRET" not in listed


def test_list_pages_filters_and_stays_in_the_tenant(api_stack: ApiStack) -> None:
    c = api_stack.client("lister")
    ids = []
    for i in range(5):
        resp = c.post("/v1/jobs", json=job(make_image(20 + i), job_id=f"l-{i}",
                                         priority="bulk" if i % 2 else "interactive"))  # fmt: skip
        ids.append(resp.json()["job_id"])
    for i in (0, 2, 4):
        wait_done(c, f"l-{i}")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = c.get("/v1/jobs", params=params).json()
        assert len(page["jobs"]) <= 2
        seen += [d["job_id"] for d in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["l-4", "l-3", "l-2", "l-1", "l-0"]  # newest first, each once
    queued = c.get("/v1/jobs", params={"status": "queued"}).json()["jobs"]
    assert [d["job_id"] for d in queued] == ["l-3", "l-1"]
    done = c.get("/v1/jobs", params={"status": "succeeded"}).json()["jobs"]
    assert [d["job_id"] for d in done] == ["l-4", "l-2", "l-0"]
    bad = c.get("/v1/jobs", params={"status": "weird"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


def test_generated_images_stay_in_their_tenant(api_stack: ApiStack) -> None:
    a, b = api_stack.client("painter-a"), api_stack.client("painter-b")
    body = {"prompt": "a red square", "model": "gpt-image-1", "size": "1024x1024",
            "quality": "low", "job_id": "g-1"}  # fmt: skip
    resp = a.post("/v1/images/generations", json=body)
    assert resp.status_code == 202, resp.text
    assert resp.json()["job_id"] == "g-1"
    taken = b.post("/v1/images/generations", json={**body, "prompt": "B's own"})
    assert taken.status_code == 202 and taken.json()["job_id"] == "g-1"  # B's own g-1
    done = wait_done(a, "g-1")
    assert done["status"] == "succeeded", done
    image = a.get("/v1/jobs/g-1/images/0")
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    assert b.get(f"/v1/jobs/{'painter-a'}~g-1/images/0").status_code == 404
    assert [d["job_id"] for d in a.get("/v1/jobs").json()["jobs"]] == ["g-1"]
    # Keys with a budget or quotas generate too: tests/api/test_image_budgets.py.
