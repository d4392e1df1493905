"""Webhooks over real HTTP: a receiver that verifies every signature and sees the retries."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.webhooks import WebhookQueue, verify
from tests.api.conftest import ApiStack, job, wait_done
from tests.pipeline.conftest import make_image


@dataclass
class Receiver:
    url: str
    fail_first: int = 2
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(500 if len(state.seen) <= state.fail_first else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state
    httpd.shutdown()


def test_a_webhook_is_signed_retried_and_delivered_once(
    api_stack: ApiStack, receiver: Receiver
) -> None:
    c = api_stack.client("hooked")
    secret = api_stack.webhook_secrets["hooked"].encode()
    resp = c.post("/v1/jobs", json=job(make_image(70), job_id="wh-1", callback_url=receiver.url))
    assert resp.status_code == 202, resp.text
    assert wait_done(c, "wh-1")["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while len(receiver.seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # delivered: nothing more may come
    assert len(receiver.seen) == 3, [h.get("imgq-attempt") for h, _ in receiver.seen]
    for attempt, (headers, body) in enumerate(receiver.seen, start=1):
        assert verify(secret, body, headers["imgq-signature"]), headers
        assert not verify(b"whsec_another_tenant", body, headers["imgq-signature"])
        assert headers["imgq-attempt"] == str(attempt)
        assert headers["content-type"] == "application/json"
    assert len({h["imgq-delivery"] for h, _ in receiver.seen}) == 1
    import json

    doc = json.loads(receiver.seen[-1][1])
    assert doc["type"] == "job.finished"
    assert doc["job"]["job_id"] == "wh-1" and doc["job"]["status"] == "succeeded"
    # A job cancelled while queued is final too: its webhook says so.
    body = job(make_image(72), job_id="wh-2", priority="bulk", callback_url=receiver.url)
    assert c.post("/v1/jobs", json=body).status_code == 202
    assert c.delete("/v1/jobs/wh-2").status_code == 200
    deadline = time.monotonic() + 30
    while len(receiver.seen) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    headers, raw = receiver.seen[3]
    assert verify(secret, raw, headers["imgq-signature"])
    doc = json.loads(raw)["job"]
    assert doc["job_id"] == "wh-2" and doc["error"]["code"] == "cancelled"


def test_callback_urls_pass_the_ssrf_guard_at_submit(api_stack: ApiStack) -> None:
    c = api_stack.client("hooked")
    for url in ("http://169.254.169.254/latest/meta-data", "http://10.0.0.7/hook",
                "ftp://example.com/x", "not a url"):  # fmt: skip
        resp = c.post("/v1/jobs", json=job(make_image(71), callback_url=url))
        assert resp.status_code == 400, (url, resp.text)
        assert resp.json()["error"]["code"] == "invalid_job"
        assert "callback_url" in resp.json()["error"]["message"]


async def test_deliveries_end_after_their_attempts_or_lifetime(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    try:
        q = WebhookQueue(r)
        d = await q.enqueue("http://127.0.0.1:9/x", "t", {"a": 1}, lifetime=3600)
        claimed = await q.claim()
        assert [x.id for x in claimed] == [d.id]
        assert await q.claim() == []  # leased: no second sender takes it
        assert await q.retry_later(claimed[0], max_attempts=3)
        assert await q.retry_later(claimed[0], max_attempts=3)
        assert not await q.retry_later(claimed[0], max_attempts=3)  # the 3rd failure ends it
        assert await r.zcard("imgq:webhooks:due") == 0
        short = await q.enqueue("http://127.0.0.1:9/x", None, {"a": 1}, lifetime=0.5)
        (got,) = await q.claim()
        assert got.id == short.id
        assert not await q.retry_later(got, max_attempts=8)  # the next try is past its lifetime
        assert await r.keys("imgq:webhook:*") == []
    finally:
        await r.aclose()


def test_the_readme_verification_snippet_verifies_our_signatures() -> None:
    import re

    from shared.webhooks import sign
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Webhooks", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    scope: dict[str, Any] = {}
    exec(snippet.group(1), scope)  # the snippet as a receiver would paste it
    body = b'{"type":"job.finished","job":{"job_id":"x"}}'
    header = sign(b"whsec_abc", body)
    assert scope["verify"](b"whsec_abc", body, header)
    assert not scope["verify"](b"whsec_abc", body + b" ", header)
    assert not scope["verify"](b"whsec_other", body, header)
    old = sign(b"whsec_abc", body, timestamp=int(time.time()) - 3600)
    assert not scope["verify"](b"whsec_abc", body, old)
