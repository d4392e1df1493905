"""API keys at the door: ``Authorization: Bearer imgq_...`` on every route but the probes.

The key's record (shared/tenants.py) is put on the request as ``request[API_KEY]``; routes
scope everything by its tenant. ``/metrics`` on the API port needs an admin key (or serve it on
``IMGQ_API_METRICS_PORT``, without keys, for an internal network). With ``IMGQ_API_AUTH=off``
there are no keys and every caller is the one local tenant (``request[API_KEY]`` is None).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from producer.api_edge import API_KEY, Handler, error_response
from shared.tenants import KeyStore

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="imgq"'}


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header.

    >>> bearer("Bearer imgq_abc"), bearer("Basic eA=="), bearer(None)
    ('imgq_abc', None, None)
    """
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def auth_middleware(keys: KeyStore | None) -> Any:
    """``keys`` None: open mode (IMGQ_API_AUTH=off)."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[API_KEY] = None
        if keys is None or request.path in PUBLIC_PATHS:
            return await handler(request)
        token = bearer(request.headers.get("Authorization"))
        if token is None:
            return error_response(
                401, "unauthorized", "send `Authorization: Bearer <API key>`", _CHALLENGE
            )
        try:
            key = await keys.authenticate(token)
        except (RedisError, OSError):
            return error_response(503, "storage_unavailable", "key store unavailable")
        if key is None:
            return error_response(401, "unauthorized", "unknown or revoked API key", _CHALLENGE)
        if request.path == "/metrics" and not key.admin:
            return error_response(
                403, "permission_denied", "/metrics needs an admin key (imgq keys create --admin)"
            )
        request[API_KEY] = key
        return await handler(request)

    return auth


__all__ = ["PUBLIC_PATHS", "auth_middleware", "bearer"]
