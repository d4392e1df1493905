"""Keys at the door, over real HTTP: every route but the probes needs a live key of its tenant."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from shared.tenants import hash_key
from tests.api.conftest import ApiStack, imgq, job
from tests.pipeline.conftest import make_image

# (method, path, json body) for every route of the API.
ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/jobs", job(make_image(1))),
    ("POST", "/v1/jobs/batch", {"jobs": [job(make_image(1))]}),
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/jobs/some-job", None),
    ("GET", "/v1/jobs/some-job?wait=1", None),
    ("DELETE", "/v1/jobs/some-job", None),
    ("GET", "/v1/jobs/some-job/events", None),
    ("GET", "/v1/jobs/some-job/images/0", None),
    ("POST", "/v1/images/generations", {"prompt": "a cat"}),
    ("POST", "/v1/images/edits", {"prompt": "a cat"}),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/metrics", None),
]


def _assert_error(resp: requests.Response, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["code"] == code, body
    assert body["error"]["request_id"] == resp.headers["X-Request-Id"]


def test_probes_answer_without_a_key(api_stack: ApiStack) -> None:
    for path in ("/healthz", "/readyz"):
        resp = requests.get(api_stack.url + path)
        assert resp.status_code == 200 and resp.json() == {"ok": True}
        assert resp.headers["X-Request-Id"]


@pytest.fixture(scope="module")
def revoked(api_stack: ApiStack) -> str:
    secret = api_stack.key("revoked-one", tenant="gone")
    out = imgq(api_stack.env, "keys", "revoke", api_stack.ids["revoked-one"])
    assert out.returncode == 0, out.stderr
    return secret


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_refuses_no_key_a_wrong_key_and_a_revoked_key(
    api_stack: ApiStack, revoked: str, method: str, path: str, body: Any
) -> None:
    cases = {
        "none": {},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "unknown": {"Authorization": "Bearer imgq_" + "x" * 43},
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }
    for name, headers in cases.items():
        resp = requests.request(method, api_stack.url + path, json=body, headers=headers)
        _assert_error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), name


def test_a_live_key_passes_the_door_on_every_route(api_stack: ApiStack) -> None:
    with api_stack.client("door") as c:
        for method, path, body in ROUTES:
            resp = c.request(method, path, json=body)
            if path == "/metrics":  # not an admin key
                _assert_error(resp, 403, "permission_denied")
            else:
                assert resp.status_code != 401, (method, path, resp.text)


def test_metrics_need_an_admin_key_or_the_metrics_port(api_stack: ApiStack) -> None:
    with api_stack.client("ops") as c:
        _assert_error(c.get("/metrics"), 403, "permission_denied")
    api_stack.key("ops-admin", tenant="ops", admin=True)
    with api_stack.client("ops-admin") as c:
        resp = c.get("/metrics")
        assert resp.status_code == 200 and "imgq_" in resp.text
    # The metrics port (internal network) needs no key: Prometheus scrapes it.
    resp = requests.get(api_stack.metrics_url)
    assert resp.status_code == 200 and "imgq_tenant_spend_usd" in resp.text


def test_keys_are_stored_hashed_and_listed_without_secrets(api_stack: ApiStack) -> None:
    import redis

    secret = api_stack.key("hashed", "--models", "gpt-4.1-mini", "--weight", "3")
    r = redis.Redis.from_url(api_stack.redis_url)
    dump = b"".join(r.dump(k) or b"" for k in r.scan_iter("imgq:apikey*"))
    assert secret.encode() not in dump
    assert r.exists(f"imgq:apikey:{hash_key(secret)}")
    listed = imgq(api_stack.env, "keys", "list", "--json")
    assert listed.returncode == 0 and secret not in listed.stdout
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = next(row for row in rows if row["id"] == api_stack.ids["hashed"])
    assert mine["tenant"] == "hashed" and "hash" not in mine
    assert mine["policy"]["models"] == ["gpt-4.1-mini"] and mine["policy"]["weight"] == 3.0
    human = imgq(api_stack.env, "keys", "list")
    assert api_stack.ids["hashed"] in human.stdout and secret not in human.stdout


def test_keys_create_refuses_bad_input(api_stack: ApiStack) -> None:
    bad_tenant = imgq(api_stack.env, "keys", "create", "--tenant", "Not Valid")
    assert bad_tenant.returncode != 0 and "tenant name" in bad_tenant.stderr
    both = imgq(api_stack.env, "keys", "create", "--tenant", "x",
                "--daily-budget-usd", "1", "--monthly-budget-usd", "5")  # fmt: skip
    assert both.returncode != 0 and "not both" in both.stderr
    missing = imgq(api_stack.env, "keys", "revoke", "key_nothere")
    assert missing.returncode != 0 and "no key" in missing.stderr


def test_revoking_takes_effect_on_the_next_request(api_stack: ApiStack) -> None:
    with api_stack.client("short-lived") as c:
        assert c.get("/v1/jobs").status_code == 200
        out = imgq(api_stack.env, "keys", "revoke", api_stack.ids["short-lived"])
        assert out.returncode == 0 and "revoked" in out.stdout
        _assert_error(c.get("/v1/jobs"), 401, "unauthorized")
