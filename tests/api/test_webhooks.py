"""Webhooks over real HTTP: a receiver that verifies every signature and sees the retries, and
secret rotation (`imgq keys webhook-secret --rotate`) while a worker delivers: before it the old
secret verifies; during the grace period either does (one ``v1`` each); after ``--revoke-old``
or the end of the grace period only the new one does."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from shared.webhooks import (
    MAX_PREVIOUS,
    PREVIOUS_PREFIX,
    WebhookQueue,
    rotate_secret,
    sign,
    tenant_secrets,
    verify,
)
from tests.api.conftest import ApiStack, imgq, job, wait_done
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


def test_picture_jobs_call_back_too(api_stack: ApiStack, receiver: Receiver) -> None:
    receiver.fail_first = 0
    c = api_stack.client("hooked")
    secret = api_stack.webhook_secrets["hooked"].encode()
    body = {"prompt": "a kite", "size": "1024x1024", "quality": "low", "job_id": "wh-gen",
            "callback_url": receiver.url}  # fmt: skip
    resp = c.post("/v1/images/generations", json=body)
    assert resp.status_code == 202, resp.text
    assert wait_done(c, "wh-gen")["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while not receiver.seen and time.monotonic() < deadline:
        time.sleep(0.1)
    (headers, raw), *more = receiver.seen
    assert not more
    assert verify(secret, raw, headers["imgq-signature"])
    doc = json.loads(raw)["job"]
    assert doc["job_id"] == "wh-gen" and doc["status"] == "succeeded" and len(doc["images"]) == 1
    for url in ("http://169.254.169.254/latest/meta-data", "ftp://example.com/x", 7):
        refused = c.post("/v1/images/generations", json={"prompt": "x", "callback_url": url})
        assert refused.status_code == 400, (url, refused.text)
        assert "callback_url" in refused.json()["error"]["message"]


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
    both = sign(b"whsec_new", body, previous=[b"whsec_abc"])  # a rotation's grace period
    assert scope["verify"](b"whsec_new", body, both)
    assert scope["verify"](b"whsec_abc", body, both)
    assert not scope["verify"](b"whsec_other", body, both)
    stale = sign(b"whsec_new", body, timestamp=int(time.time()) - 3600, previous=[b"whsec_abc"])
    assert not scope["verify"](b"whsec_abc", body, stale)


TENANT = "rotor"


def _deliver(api_stack: ApiStack, receiver: Receiver, n: int) -> tuple[str, bytes]:
    """Submit one job with a callback; its delivery's (signature header, body)."""
    c = api_stack.client(TENANT)
    seen = len(receiver.seen)
    body = job(make_image(200 + n), job_id=f"rot-{n}", callback_url=receiver.url)
    assert c.post("/v1/jobs", json=body).status_code == 202
    assert wait_done(c, f"rot-{n}")["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while len(receiver.seen) <= seen:
        assert time.monotonic() < deadline, "no delivery"
        time.sleep(0.05)
    headers, raw = receiver.seen[seen]
    assert json.loads(raw)["job"]["job_id"] == f"rot-{n}"
    return headers["imgq-signature"], raw


def _rotate(api_stack: ApiStack, *args: str) -> str:
    out = imgq(api_stack.env, "keys", "webhook-secret", "--tenant", TENANT, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_rotation_grace_period_then_only_the_new_secret(
    api_stack: ApiStack, receiver: Receiver
) -> None:
    receiver.fail_first = 0
    api_stack.key(TENANT)
    s0 = api_stack.webhook_secrets[TENANT].encode()

    header, raw = _deliver(api_stack, receiver, 1)  # before any rotation: the old secret
    assert verify(s0, raw, header) and header.count("v1=") == 1

    stdout = _rotate(api_stack, "--rotate", "--grace", "1h")
    s1 = stdout.strip().encode()
    assert stdout == s1.decode() + "\n" and s1.startswith(b"whsec_") and s1 != s0  # shown once
    header, raw = _deliver(api_stack, receiver, 2)  # grace period: either secret verifies
    assert verify(s1, raw, header) and verify(s0, raw, header)
    t = int(header.split(",")[0].removeprefix("t="))
    assert header == sign(s1, raw, timestamp=t, previous=[s0])  # the new one first
    assert not verify(b"whsec_someone_else", raw, header)

    assert json.loads(_rotate(api_stack, "--revoke-old", "--json"))["revoked_previous"] == 1
    header, raw = _deliver(api_stack, receiver, 3)  # grace ended early: only the new one
    assert verify(s1, raw, header) and not verify(s0, raw, header)
    assert header.count("v1=") == 1

    doc = json.loads(_rotate(api_stack, "--rotate", "--grace", "1s", "--json"))
    s2 = doc["webhook_secret"].encode()
    assert doc["tenant"] == TENANT and doc["previous_valid_until"] is not None and s2 != s1
    r = redis.Redis.from_url(api_stack.redis_url)
    deadline = time.monotonic() + 30
    while r.exists(PREVIOUS_PREFIX + TENANT):  # the grace period ends on Redis's clock
        assert time.monotonic() < deadline
        time.sleep(0.1)
    header, raw = _deliver(api_stack, receiver, 4)  # after the grace period: only the new one
    assert verify(s2, raw, header) and not verify(s1, raw, header)
    assert header.count("v1=") == 1

    for log in ("worker.log", "api.log"):  # secrets are never logged
        text = (api_stack.tmp / log).read_bytes()
        assert not any(s in text for s in (s0, s1, s2)), log


async def test_rotations_keep_a_bounded_number_of_previous_secrets(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    try:
        first = (await tenant_secrets(r, "t"))[0]
        # Graces growing by 1 s: each replaced secret ends after the ones replaced before it.
        news = [(await rotate_secret(r, "t", grace_seconds=3600 + i))[0] for i in range(6)]
        valid = await tenant_secrets(r, "t")
        assert valid[0] == news[-1]  # current first, then the longest-valid (the last replaced)
        assert valid[1:] == news[-2::-1][:MAX_PREVIOUS] and first not in valid
        new, until = await rotate_secret(r, "t", grace_seconds=0)  # no grace: gone at once
        assert until is None and await tenant_secrets(r, "t") == [new, *valid[1:]]
        assert (await tenant_secrets(r, None))[0].startswith(b"whsec_")  # open mode's own
    finally:
        await r.aclose()
