"""The strict edge over real HTTP: content types, one error shape, request ids, origins."""

from __future__ import annotations

import re

import pytest
import requests

from tests.api.conftest import ApiStack, job
from tests.pipeline.conftest import make_image

SHAPE = {"code", "message", "request_id"}


def _error(resp: requests.Response, status: int, code: str) -> dict[str, str]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    err: dict[str, str] = resp.json()["error"]
    assert set(err) == SHAPE and err["code"] == code, err
    assert err["request_id"] == resp.headers["X-Request-Id"]
    return err


def test_text_plain_is_415_even_when_it_is_json(api_stack: ApiStack) -> None:
    c = api_stack.client("edge")
    body = '{"images": [], "prompt": "hi"}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/octet-stream"):
        resp = c.post("/v1/jobs", data=body, headers={"Content-Type": ctype})
        _error(resp, 415, "unsupported_media_type")
        resp = c.post("/v1/jobs/batch", data=body, headers={"Content-Type": ctype})
        _error(resp, 415, "unsupported_media_type")
    # multipart and JSON pass the edge
    files = {"image": ("a.png", make_image(30), "image/png")}
    ok = c.post("/v1/jobs", files=files, data={"prompt": "hi", "priority": "bulk"})
    assert ok.status_code == 202, ok.text


def test_every_error_has_one_shape_a_stable_code_and_no_internals(api_stack: ApiStack) -> None:
    c = api_stack.client("edge")
    _error(c.get("/no/such/route"), 404, "not_found")
    _error(c.put("/v1/jobs", json={}), 405, "method_not_allowed")
    _error(c.post("/v1/jobs", data="{not json", headers={"Content-Type": "application/json"}),
           400, "invalid_job")  # fmt: skip
    _error(c.post("/v1/jobs", json={"prompt": "x", "job_id": "has space"}), 400, "invalid_job")
    _error(c.post("/v1/jobs", json={"prompt": "x", "surprise": 1}), 400, "invalid_job")
    _error(c.get("/v1/jobs/x", params={"wait": "nan"}), 400, "invalid_job")
    _error(c.post("/v1/jobs/batch", json={"jobs": []}), 400, "invalid_job")
    big = c.post("/v1/jobs", data=b"{" + b" " * (65 * 1024 * 1024) + b"}",
                 headers={"Content-Type": "application/json"})  # fmt: skip
    _error(big, 413, "body_too_large")
    port = api_stack.redis_url.rsplit(":", 1)[1].split("/")[0]
    for resp in (c.get("/no/such/route"), c.put("/v1/jobs", json={})):
        assert "Traceback" not in resp.text and port not in resp.text


def test_request_ids_on_every_answer_and_log_line(api_stack: ApiStack) -> None:
    c = api_stack.client("edge")
    resp = c.get("/v1/jobs", headers={"X-Request-Id": "trace-abc-123"})
    assert resp.status_code == 200 and resp.headers["X-Request-Id"] == "trace-abc-123"
    bad = c.get("/v1/jobs", headers={"X-Request-Id": "no spaces or\u00e9 please"})
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-Id"])
    sub = c.post("/v1/jobs", json=job(make_image(31), priority="bulk"))
    events = c.get(f"/v1/jobs/{sub.json()['job_id']}/events", stream=True)
    assert events.headers["X-Request-Id"]
    events.close()
    assert requests.get(api_stack.url + "/healthz").headers["X-Request-Id"]
    log = (api_stack.tmp / "api.log").read_text()
    assert "request_id=trace-abc-123 GET /v1/jobs -> 200" in log
    assert "tenant=edge" in log


def test_browser_origins_are_refused_unless_allow_listed(api_stack: ApiStack) -> None:
    c = api_stack.client("edge")
    resp = c.post("/v1/jobs", json=job(make_image(32)), headers={"Origin": "https://evil.example"})
    _error(resp, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in resp.headers
    pre = requests.options(api_stack.url + "/v1/jobs", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert pre.status_code == 403 and "Access-Control-Allow-Origin" not in pre.headers


def test_openapi_document_and_docs_page(api_stack: ApiStack) -> None:
    c = api_stack.client("edge")
    spec = c.get("/openapi.json").json()
    assert spec["openapi"] == "3.1.0"
    assert {"/v1/jobs", "/v1/jobs/batch", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events",
            "/v1/images/generations", "/v1/images/edits",
            "/v1/jobs/{job_id}/images/{index}"} == set(spec["paths"]) - {"/healthz", "/readyz"}  # fmt: skip
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    page = c.get("/docs")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/v1/jobs/{job_id}/events" in page.text and "<script" not in page.text


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/images/edits"])
@pytest.mark.parametrize(
    "part",
    [
        b'Content-Disposition: form-data; name="\xf2\x8c\x9b\x9d\x0c"\r\n\r\n1',  # bad header
        b'Content-Disposition: form-data; name="prompt"\r\n'
        b"Content-Transfer-Encoding: rot13\r\n\r\nx",  # an encoding nobody knows
    ],
    ids=["header", "encoding"],
)
def test_a_malformed_multipart_part_is_the_callers_400(
    api_stack: ApiStack, path: str, part: bytes
) -> None:
    c = api_stack.client("edge")
    body = b"--b\r\n" + part + b'\r\n--b\r\nContent-Disposition: form-data; name="prompt"'
    body += b"\r\n\r\nx\r\n--b--\r\n"
    resp = c.post(path, data=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_job"
    assert "multipart" in resp.json()["error"]["message"]
