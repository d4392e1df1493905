"""The API's edge: request ids, one error shape, content types, CORS and foreign origins.

Every answer carries ``X-Request-Id`` (the caller's, when it is a short token, else a new one)
and every error is ``{"error": {"code", "message", "request_id"}}`` with a stable code. Server
errors (5xx) say what kind of trouble it is and never how: no hosts, ports or tracebacks (the
log line with the same request id has the detail).

Bodies are ``application/json`` or ``multipart/form-data`` only (else 415): ``text/plain`` is
never parsed as JSON. A request that carries an ``Origin`` header (a browser page) is refused
(403 ``origin_not_allowed``) unless the origin is in ``IMGQ_API_CORS_ORIGINS``; allowed origins
get the CORS headers and their preflights are answered here.

>>> error_body("not_found", "no job x", "r1")
{'error': {'code': 'not_found', 'message': 'no job x', 'request_id': 'r1'}}
>>> valid_request_id("abc-123"), valid_request_id("a b"), valid_request_id("x" * 200)
(True, False, False)
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from shared.tenants import ApiKey

log = logging.getLogger("imgq.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("imgq_request_id", default="-")
RID_KEY: web.RequestKey[str] = web.RequestKey("imgq_request_id", str)
API_KEY: web.RequestKey[ApiKey | None] = web.RequestKey("imgq_api_key")  # set by api_auth
BODY_TYPES = frozenset({"application/json", "multipart/form-data"})
_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Codes for errors aiohttp raises itself (routing, body size, methods).
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_job",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
}
# What a 5xx may say: its code's meaning, never the exception text (it names hosts and ports).
SERVER_MESSAGES = {
    "storage_unavailable": "storage (Redis/S3) or the broker is unavailable; retry later",
    "result_unreadable": "the stored result of this job cannot be read",
    "internal_error": "internal error; quote the request id to the operator",
}


class RequestIdFilter(logging.Filter):
    """Ends every log line written while serving a request with its ``request_id=``."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if rid != "-":
            message = record.getMessage()
            if "request_id=" not in message:
                record.msg, record.args = f"{message} request_id={rid}", ()
        return True


def install_log_filter() -> None:
    """Add the filter to the root logger's handlers (where `imgq api` writes), once."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())


def valid_request_id(value: str) -> bool:
    return bool(_RID.match(value))


def error_body(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The one error shape (the request id is filled in by the edge middleware)."""
    return web.json_response(error_body(code, message, REQUEST_ID.get()), status=status,
                             headers=headers)  # fmt: skip


def _normalised(resp: web.Response, request_id: str) -> web.Response:
    """``resp`` (status >= 400) in the one error shape, with its request id and no internals."""
    code, message = HTTP_CODES.get(resp.status, "error"), resp.reason or "error"
    if resp.content_type == "application/json" and isinstance(resp.body, bytes):
        try:
            doc = json.loads(resp.body)
            err = doc.get("error") if isinstance(doc, dict) else None
            if isinstance(err, dict) and isinstance(err.get("code"), str):
                code, message = err["code"], str(err.get("message", message))
        except ValueError:
            pass
    if resp.status >= 500:
        message = SERVER_MESSAGES.get(code, SERVER_MESSAGES["internal_error"])
    out = web.json_response(error_body(code, message, request_id), status=resp.status)
    for name in ("WWW-Authenticate", "Allow", "Retry-After", "Connection"):
        if name in resp.headers:
            out.headers[name] = resp.headers[name]
    if resp.keep_alive is False:
        out.force_close()
    return out


def _from_exception(exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
    message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
    code = HTTP_CODES.get(exc.status, "error")
    return web.json_response(error_body(code, message, ""), status=exc.status, headers=headers)


def edge_middleware(cors_origins: list[str]) -> Any:
    allowed = frozenset(o.rstrip("/") for o in cors_origins)

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        rid = incoming if valid_request_id(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        request[RID_KEY] = rid
        started = time.perf_counter()
        origin = request.headers.get("Origin")
        try:
            resp = await _handle(request, handler, origin, allowed)
        finally:
            REQUEST_ID.reset(token)
        if isinstance(resp, web.Response) and resp.status >= 400:
            resp = _normalised(resp, rid)
        if resp.prepared:  # a stream (SSE): its headers went out when it started
            pass
        elif origin is not None and origin.rstrip("/") in allowed:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Expose-Headers"] = REQUEST_ID_HEADER
            resp.headers["Vary"] = "Origin"
        if not resp.prepared:
            resp.headers[REQUEST_ID_HEADER] = rid
        key = request.get(API_KEY)
        log.info(
            "request_id=%s %s %s -> %d in %.1f ms tenant=%s",
            rid,
            request.method,
            request.path,
            resp.status,
            (time.perf_counter() - started) * 1000,
            getattr(key, "tenant", "-"),
        )
        return resp

    return edge


async def _handle(
    request: web.Request, handler: Handler, origin: str | None, allowed: frozenset[str]
) -> web.StreamResponse:
    if origin is not None and origin.rstrip("/") not in allowed:
        return error_response(
            403, "origin_not_allowed", "browser origins are refused unless allow-listed"
        )
    if origin is not None and request.method == "OPTIONS":
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Request-Id",
                "Access-Control-Max-Age": "600",
            },
        )
    if request.method in ("POST", "PUT", "PATCH") and request.content_type not in BODY_TYPES:
        return error_response(
            415,
            "unsupported_media_type",
            "send application/json or multipart/form-data",
        )
    try:
        return await handler(request)
    except web.HTTPException as exc:  # routing (404/405), body size (413), ...
        return _from_exception(exc)
    except (RedisError, ConnectionError) as exc:  # Redis down under any route: retry later
        log.warning("request_id=%s storage error: %r", REQUEST_ID.get(), exc)
        return error_response(503, "storage_unavailable", SERVER_MESSAGES["storage_unavailable"])
    except Exception:
        log.exception("request_id=%s unexpected error", REQUEST_ID.get())
        return error_response(500, "internal_error", SERVER_MESSAGES["internal_error"])


__all__ = [
    "API_KEY",
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "RID_KEY",
    "RequestIdFilter",
    "edge_middleware",
    "error_body",
    "error_response",
    "install_log_filter",
    "valid_request_id",
]
