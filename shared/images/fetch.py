"""Fetch an image URL safely: SSRF guard on every resolved address and redirect, byte cap, deadline.

The guard runs twice: before each request (on the URL's host, so a forbidden host never gets a
connection attempt and errors are clear) and inside the connector's resolver of sessions made by
``make_fetch_session`` (so DNS rebinding between the check and the connect cannot slip through).

>>> is_forbidden_ip(ipaddress.ip_address("::ffff:169.254.169.254"))
True
>>> host_literal("0177.0.0.1")
IPv4Address('127.0.0.1')
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from shared.errors import ImageFetchError, ImageTooLargeError, ImageUrlForbiddenError
from shared.settings import Settings

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS: Final = 3
_CHUNK: Final = 64 * 1024
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# Cloud metadata endpoints, refused even if someone allow-lists a broad private range.
_METADATA: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_HEADERS: Final = {"User-Agent": "imgq-image-fetcher/0.1", "Accept": "image/*"}


class ForbiddenAddressError(OSError):
    """Raised inside the connector's resolver; mapped to ``ImageUrlForbiddenError``."""


def safe_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to put in messages and logs."""
    try:
        p = urlsplit(url)
        netloc = p.hostname or ""
        if p.port:
            netloc += f":{p.port}"
        return urlunsplit((p.scheme, netloc, p.path, "", ""))
    except ValueError:
        return "<malformed URL>"


def _embedded_ipv4(ip: IP) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    # IPv4-compatible (deprecated) ::a.b.c.d
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip))
    return None


def is_forbidden_ip(ip: IP) -> bool:
    """True for anything but a public unicast address (v4, v6, or v4 embedded in v6)."""
    inner = _embedded_ipv4(ip)
    if inner is not None and is_forbidden_ip(inner):
        return True
    return (
        ip in _METADATA
        or not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_loopback
        or ip.is_link_local
    )


def host_literal(host: str) -> IP | None:
    """``host`` as an IP in any form a resolver accepts (decimal, octal, hex, short)."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))  # 2130706433, 0177.1, 0x7f.1 ...
    except OSError:
        return None


class AllowList:
    """``Settings.fetch_allow_hosts``: host names (exact, case-insensitive) and IPs/CIDRs."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.hosts.add(entry.rstrip("."))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".").strip("[]") in self.hosts

    def ip_allowed(self, ip: IP) -> bool:
        candidates = [ip, *([inner] if (inner := _embedded_ipv4(ip)) else [])]
        return any(c in net for c in candidates for net in self.networks)

    def check_ip(self, host: str, ip: IP) -> None:
        if is_forbidden_ip(ip) and not self.ip_allowed(ip):
            raise ImageUrlForbiddenError(
                f"refusing to fetch from {host}: it resolves to {ip}, a private, loopback, "
                "link-local or metadata address (add it to IMGQ_FETCH_ALLOW_HOSTS to allow it)"
            )


async def check_host(host: str, port: int, allow: AllowList) -> None:
    """Raise ``ImageUrlForbiddenError`` unless every address ``host`` resolves to is allowed."""
    if allow.host_allowed(host):
        return
    literal = host_literal(host)
    if literal is not None:
        if isinstance(literal, ipaddress.IPv4Address) and host != str(literal):
            raise ImageUrlForbiddenError(
                f"refusing host {host!r}: a numeric address in a non-standard form"
            )
        allow.check_ip(host, literal)
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ImageFetchError(f"cannot resolve host {host!r}: {exc}") from None
    for info in infos:
        allow.check_ip(host, ipaddress.ip_address(str(info[4][0]).split("%")[0]))


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses forbidden addresses at connect time (anti DNS rebinding)."""

    def __init__(self, allow: AllowList) -> None:
        self._inner = ThreadedResolver()
        self._allow = allow

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow.host_allowed(host):
            for r in results:
                ip = ipaddress.ip_address(r["host"].split("%")[0])
                if is_forbidden_ip(ip) and not self._allow.ip_allowed(ip):
                    raise ForbiddenAddressError(f"{host} resolves to forbidden address {ip}")
        return results

    async def close(self) -> None:
        await self._inner.close()


def make_fetch_session(settings: Settings, **kwargs: Any) -> aiohttp.ClientSession:
    """A session for fetching untrusted URLs; create it on the running loop.

    Its connector re-checks every resolved address, holds at most ``fetch_connections`` (at most
    ``fetch_connections_per_host`` to one host, so one slow host cannot take the whole pool), and
    it keeps no cookies: a cookie set while fetching one job's image never reaches another's.
    The worker also caps each job's concurrent loads (``image_loads_per_job``).
    """
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(AllowList(settings.fetch_allow_hosts)),
        limit=settings.fetch_connections,
        limit_per_host=settings.fetch_connections_per_host,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        headers=_HEADERS,
        **kwargs,
    )


def _check_scheme(url: URL) -> None:
    if url.scheme not in ("http", "https"):
        raise ImageUrlForbiddenError(f"only http and https URLs are fetched, not {url.scheme!r}")
    if not url.host:
        raise ImageFetchError(f"the URL has no host: {safe_url(str(url))}")


async def fetch_image(
    url: str, *, settings: Settings, session: aiohttp.ClientSession | None = None
) -> bytes:
    """Download an image, within ``settings.fetch_timeout_seconds`` and ``max_image_bytes``.

    Redirects are followed by hand (at most ``min(settings.fetch_max_redirects, 3)``), each target
    re-checked. Raises ``ImageUrlForbiddenError``, ``ImageFetchError`` or ``ImageTooLargeError``;
    messages never carry the query string (it may hold a signature).
    """
    allow = AllowList(settings.fetch_allow_hosts)
    own = session is None
    sess = session if session is not None else make_fetch_session(settings)
    try:
        async with asyncio.timeout(settings.fetch_timeout_seconds):
            return await _fetch(URL(url), sess, allow, settings)
    except TimeoutError:
        raise ImageFetchError(
            f"fetching {safe_url(url)} took longer than {settings.fetch_timeout_seconds:g} s"
        ) from None
    except ValueError as exc:  # yarl/aiohttp on malformed URLs
        raise ImageFetchError(f"malformed URL {safe_url(url)}: {exc}") from None
    finally:
        if own:
            await sess.close()


async def _fetch(
    url: URL, session: aiohttp.ClientSession, allow: AllowList, settings: Settings
) -> bytes:
    cap = settings.max_image_bytes
    max_hops = min(settings.fetch_max_redirects, MAX_REDIRECTS)
    for _hop in range(max_hops + 1):
        _check_scheme(url)
        assert url.host is not None and url.port is not None
        await check_host(url.host, url.port, allow)
        shown = safe_url(str(url))
        try:
            async with session.get(url, allow_redirects=False, headers=_HEADERS) as resp:
                if resp.status in _REDIRECTS:
                    location = resp.headers.get("Location")
                    if not location:
                        raise ImageFetchError(f"{shown} redirected without a Location")
                    url = url.join(URL(location))
                    continue
                if resp.status != 200:
                    raise ImageFetchError(f"{shown} answered HTTP {resp.status} {resp.reason}")
                if resp.content_length is not None and resp.content_length > cap:
                    raise _too_large(shown, cap)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    body += chunk
                    if len(body) > cap:
                        raise _too_large(shown, cap)
                return bytes(body)
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, ForbiddenAddressError):
                raise ImageUrlForbiddenError(f"refusing to fetch {shown}: {exc.os_error}") from None
            raise ImageFetchError(f"cannot resolve the host of {shown}") from None
        except aiohttp.ClientError as exc:
            raise ImageFetchError(f"fetching {shown} failed: {type(exc).__name__}") from None
    raise ImageFetchError(f"too many redirects (more than {max_hops}) from {safe_url(str(url))}")


def _too_large(shown: str, cap: int) -> ImageTooLargeError:
    return ImageTooLargeError(f"{shown} is larger than the {cap / 2**20:.1f} MB limit per image")
