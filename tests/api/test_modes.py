"""Open mode (IMGQ_API_AUTH=off) and a CORS allow-list, on the real app over a local socket."""

from __future__ import annotations

import logging

import pytest

from shared.settings import Settings
from tests.local_http import ApiFactory


async def test_open_mode_needs_no_key_and_says_so_loudly(
    redis_url: str, api_factory: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="imgq.api"):
        c = await api_factory(Settings(redis_url=redis_url, api_auth="off"))
    assert any("NO API KEYS ARE CHECKED" in r.getMessage() for r in caplog.records)
    resp = await c.get("/v1/jobs")
    assert resp.status == 200 and (await resp.json())["jobs"] == []
    assert (await c.get("/metrics")).status == 200
    # The edge stays strict in open mode.
    resp = await c.post("/v1/jobs", data=b"{}", headers={"Content-Type": "text/plain"})
    assert resp.status == 415


async def test_keys_are_the_default(redis_url: str, api_factory: ApiFactory) -> None:
    c = await api_factory(Settings(redis_url=redis_url))
    resp = await c.get("/v1/jobs")
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"


async def test_an_allow_listed_origin_gets_cors_headers_and_preflights(
    redis_url: str, api_factory: ApiFactory
) -> None:
    origin = "https://dash.example.com"
    c = await api_factory(Settings(redis_url=redis_url, api_auth="off", api_cors_origins=[origin]))
    pre = await c.options("/v1/jobs", headers={"Origin": origin,
                                               "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == origin
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    resp = await c.get("/v1/jobs", headers={"Origin": origin})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == origin
    assert resp.headers["Vary"] == "Origin"
    other = await c.get("/v1/jobs", headers={"Origin": "https://evil.example"})
    assert other.status == 403 and "Access-Control-Allow-Origin" not in other.headers


def test_log_lines_written_during_a_request_carry_its_id() -> None:
    import io

    from producer.api_edge import REQUEST_ID, RequestIdFilter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestIdFilter())
    log = logging.getLogger("imgq.test.rid")
    log.addHandler(handler)
    try:
        log.warning("outside %s", "any request")
        token = REQUEST_ID.set("abc-123")
        try:
            log.warning("fetch of %s failed", "x.png")
            log.warning("already tagged request_id=abc-123")
        finally:
            REQUEST_ID.reset(token)
    finally:
        log.removeHandler(handler)
    assert out.getvalue().splitlines() == [
        "outside any request",
        "fetch of x.png failed request_id=abc-123",
        "already tagged request_id=abc-123",
    ]
