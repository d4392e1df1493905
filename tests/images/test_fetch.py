"""URL fetching against a real local aiohttp server, and the SSRF guard on address forms."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shared.errors import ImageFetchError, ImageTooLargeError, ImageUrlForbiddenError
from shared.images import AllowList, GuardedResolver, fetch_image, make_fetch_session, safe_url
from shared.images.fetch import ForbiddenAddressError, check_host, host_literal, is_forbidden_ip
from shared.settings import Settings
from tests.images import samples as s
from tests.local_http import serve_app

PNG = s.encode(s.photo((64, 48)), "PNG")
MB = 1024 * 1024


def _app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/chain/{n - 1}" if n > 0 else "/ok.png")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/loop")

    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        for _ in range(1000):
            await resp.write(b"x")
            await asyncio.sleep(0.05)
        return resp

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"\0" * (2 * MB), content_type="image/png")

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(40):
            await resp.write(b"\0" * 64 * 1024)
        return resp

    app = web.Application()
    app.router.add_get("/ok.png", ok)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/loop", loop)
    app.router.add_get("/drip", drip)
    app.router.add_get("/big", big)
    app.router.add_get("/big-chunked", big_chunked)
    return app


@pytest.fixture
async def server() -> AsyncIterator[int]:
    async with serve_app(_app()) as port:
        yield port


def _settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "fetch_allow_hosts": ["127.0.0.1"],
        "fetch_timeout_seconds": 2.0,
        "max_image_bytes": MB,
    }
    base.update(kw)
    return Settings(**base)


async def test_allow_listed_loopback_works(server: int) -> None:
    assert await fetch_image(f"http://127.0.0.1:{server}/ok.png", settings=_settings()) == PNG


async def test_allow_list_by_cidr_and_shared_session(server: int) -> None:
    settings = _settings(fetch_allow_hosts=["127.0.0.0/8"])
    async with make_fetch_session(settings) as session:
        for _ in range(2):
            url = f"http://127.0.0.1:{server}/ok.png"
            assert await fetch_image(url, settings=settings, session=session) == PNG


async def test_loopback_refused_without_allow_list(server: int) -> None:
    with pytest.raises(ImageUrlForbiddenError, match=r"127\.0\.0\.1"):
        await fetch_image(
            f"http://127.0.0.1:{server}/ok.png", settings=_settings(fetch_allow_hosts=[])
        )


async def test_404(server: int) -> None:
    with pytest.raises(ImageFetchError, match="HTTP 404"):
        await fetch_image(f"http://127.0.0.1:{server}/missing.png", settings=_settings())


async def test_redirects_followed_up_to_three(server: int) -> None:
    url = f"http://127.0.0.1:{server}/chain/2"  # 3 redirects: /chain/2 -> 1 -> 0 -> /ok.png
    assert await fetch_image(url, settings=_settings()) == PNG
    with pytest.raises(ImageFetchError, match="too many redirects"):
        await fetch_image(f"http://127.0.0.1:{server}/chain/3", settings=_settings())


async def test_redirect_loop(server: int) -> None:
    with pytest.raises(ImageFetchError, match="too many redirects"):
        await fetch_image(f"http://127.0.0.1:{server}/loop", settings=_settings())


async def test_redirect_to_loopback_not_allow_listed(server: int) -> None:
    # Only the name "localhost" is allowed: its redirect to the bare IP must be re-checked.
    settings = _settings(fetch_allow_hosts=["localhost"])
    target = f"http://127.0.0.1:{server}/ok.png"
    assert await fetch_image(f"http://localhost:{server}/ok.png", settings=settings) == PNG
    with pytest.raises(ImageUrlForbiddenError, match=r"127\.0\.0\.1"):
        await fetch_image(f"http://localhost:{server}/redirect?to={target}", settings=settings)


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://10.0.0.1/",
        "file:///etc/passwd",
    ],
)
async def test_redirect_to_forbidden_targets(server: int, target: str) -> None:
    url = f"http://127.0.0.1:{server}/redirect?to={target}"
    with pytest.raises(ImageUrlForbiddenError):
        await fetch_image(url, settings=_settings())


async def test_slow_drip_hits_the_deadline(server: int) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ImageFetchError, match=r"longer than 0\.5 s"):
        await fetch_image(
            f"http://127.0.0.1:{server}/drip", settings=_settings(fetch_timeout_seconds=0.5)
        )
    assert loop.time() - start < 2.0


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_oversized_body(server: int, path: str) -> None:
    with pytest.raises(ImageTooLargeError, match=r"1\.0 MB"):
        await fetch_image(f"http://127.0.0.1:{server}{path}", settings=_settings())


async def test_errors_never_show_the_query_string(server: int) -> None:
    url = f"http://127.0.0.1:{server}/missing.png?X-Amz-Signature=secret123"
    with pytest.raises(ImageFetchError) as info:
        await fetch_image(url, settings=_settings())
    assert "secret123" not in info.value.message
    assert safe_url("https://user:pw@h.example/a.png?sig=1") == "https://h.example/a.png"


async def test_session_resolver_blocks_rebinding(server: int) -> None:
    # Even when the pre-check is bypassed, the connector's resolver refuses a forbidden address.
    settings = _settings(fetch_allow_hosts=[])
    async with make_fetch_session(settings) as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError) as info:
            await session.get(f"http://localhost:{server}/ok.png")
        assert isinstance(info.value.os_error, ForbiddenAddressError)
    with pytest.raises(ForbiddenAddressError):
        await GuardedResolver(AllowList([])).resolve("localhost", 80)


# -- the guard on address forms -------------------------------------------------------------
FORBIDDEN = [
    "127.0.0.1", "2130706433", "017700000001", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1",
    "::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "::127.0.0.1", "0.0.0.0", "::", "10.1.2.3",
    "172.16.0.1", "192.168.1.1", "169.254.169.254", "::ffff:169.254.169.254", "fe80::1",
    "fc00::1", "fd00:ec2::254", "100.64.0.1", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::",
    "224.0.0.1", "255.255.255.255", "240.0.0.1",
]  # fmt: skip
ALLOWED = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "1.1.1.1"]


@pytest.mark.parametrize("host", FORBIDDEN)
async def test_guard_refuses(host: str) -> None:
    ip = host_literal(host)
    assert ip is not None and is_forbidden_ip(ip)
    with pytest.raises(ImageUrlForbiddenError):
        await check_host(host, 80, AllowList([]))


@pytest.mark.parametrize("host", ALLOWED)
async def test_guard_allows_public(host: str) -> None:
    ip = host_literal(host)
    assert ip is not None and not is_forbidden_ip(ip)
    await check_host(host, 80, AllowList([]))


async def test_guard_resolves_names_and_honours_allow_list() -> None:
    with pytest.raises(ImageUrlForbiddenError):
        await check_host("localhost", 80, AllowList([]))
    await check_host("LOCALHOST.", 80, AllowList(["localhost"]))
    await check_host("127.0.0.5", 80, AllowList(["127.0.0.0/8"]))
    allow = AllowList(["10.0.0.0/8"])
    assert allow.ip_allowed(ipaddress.ip_address("::ffff:10.1.1.1"))
    # Metadata stays forbidden unless explicitly listed; a broad range allows it only by CIDR.
    with pytest.raises(ImageUrlForbiddenError):
        await check_host("169.254.169.254", 80, AllowList(["10.0.0.0/8"]))


def test_host_literal_is_not_fooled() -> None:
    assert host_literal("example.com") is None
    assert host_literal("deadbeef.example") is None
    assert host_literal("[::1]") == ipaddress.ip_address("::1")


# -- bounded pool, no cookie jar (issue 10) -------------------------------------------------------
@pytest.fixture
async def counting_server() -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Slow images that count requests in progress, and cookies set and echoed."""
    state: dict[str, Any] = {"now": 0, "peak": 0, "cookies": []}

    async def slow(request: web.Request) -> web.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            await asyncio.sleep(0.2)
        finally:
            state["now"] -= 1
        return web.Response(body=PNG, content_type="image/png")

    async def set_cookie(request: web.Request) -> web.Response:
        resp = web.Response(body=PNG, content_type="image/png")
        resp.set_cookie("session", "job-a-secret")
        return resp

    async def echo(request: web.Request) -> web.Response:
        state["cookies"].append(request.headers.get("Cookie"))
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/slow/{n}", slow)
    app.router.add_get("/set-cookie", set_cookie)
    app.router.add_get("/echo", echo)
    async with serve_app(app) as port:
        yield port, state


async def test_one_host_gets_at_most_its_connections(counting_server: tuple[int, Any]) -> None:
    port, state = counting_server
    settings = _settings(fetch_connections=10, fetch_connections_per_host=3)
    async with make_fetch_session(settings) as session:
        got = await asyncio.gather(
            *(
                fetch_image(f"http://127.0.0.1:{port}/slow/{i}", settings=settings, session=session)
                for i in range(12)
            )
        )
    assert got == [PNG] * 12
    assert state["peak"] == 3


async def test_no_cookie_crosses_from_one_fetch_to_the_next(
    counting_server: tuple[int, Any],
) -> None:
    port, state = counting_server
    # A host name, not an IP: aiohttp's default jar ignores cookies from IP addresses anyway.
    settings = _settings(fetch_allow_hosts=["localhost"])
    async with make_fetch_session(settings) as session:  # one worker's shared session
        await fetch_image(f"http://localhost:{port}/set-cookie", settings=settings, session=session)
        await fetch_image(f"http://localhost:{port}/echo", settings=settings, session=session)
        assert len(session.cookie_jar) == 0
    async with aiohttp.ClientSession() as plain:  # the old default: the cookie travels
        await (await plain.get(f"http://localhost:{port}/set-cookie")).read()
        await (await plain.get(f"http://localhost:{port}/echo")).read()
    assert state["cookies"] == [None, "session=job-a-secret"]
