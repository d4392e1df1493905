"""The job routes, scoped to the caller's tenant (registered by ``producer.api_service``).

    POST   /v1/jobs               one job (JSON or multipart); 202 new, 200 known id
    POST   /v1/jobs/batch         {"jobs": [...]} -> {"jobs": [{"index", "status", "job"|"error"}]}
    GET    /v1/jobs               the tenant's jobs, newest first: ?status=&limit=&cursor=
    GET    /v1/jobs/{job_id}      the result document; ?wait=SECONDS for a terminal status
    DELETE /v1/jobs/{job_id}      cancel a queued job (409 once a worker holds it or it finished)
    GET    /v1/jobs/{job_id}/events   server-sent events: the document at each status change,
                                      and the text as it streams (``delta``) for ``stream`` jobs

Another tenant's job is answered exactly like a job that does not exist (404).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from yarl import URL

from producer.api_body import BodyTimeoutError, _image_from_json, _request_from, read_submit
from producer.api_edge import API_KEY, error_response
from producer.api_events import relay_events, sse
from producer.api_submit import ApiDeps, submit_for, tenant_of
from producer.client import SubmitRequest
from producer.tenant_jobs import cancelled, check_job_id, public_doc, queue_webhook, scope
from shared import errors
from shared.images.fetch import AllowList, check_host
from shared.jobs import Result
from shared.storage.wait_hub import UnreadableResultError
from shared.stream_hub import StreamHub

DEPS: web.AppKey[ApiDeps] = web.AppKey("imgq_api_deps", ApiDeps)
STREAMS: web.AppKey[StreamHub] = web.AppKey("imgq_stream_hub", StreamHub)
MAX_WAIT_SECONDS = 300.0
STATUSES = ("queued", "running", "succeeded", "failed")


def _storage_down() -> web.Response:
    return error_response(503, "storage_unavailable", "storage unavailable")


def _no_job(job_id: str) -> web.Response:
    return error_response(404, "not_found", f"no job {job_id[:128]!r}")


def _unreadable() -> web.Response:
    return error_response(502, "result_unreadable", "unreadable")


async def _existing(request: web.Request) -> tuple[str | None, str, str, Result] | web.Response:
    """The path's job as (tenant, id as given, tenant-scoped id, result), or its 404.

    Another tenant's job is scoped away, so it is answered like a missing one.
    """
    tenant = tenant_of(request[API_KEY])
    external = request.match_info["job_id"]
    if not check_job_id(external):
        return _no_job(external)
    job_id = scope(tenant, external)
    result = await _read(request.app[DEPS], job_id)
    if result is None:
        return _no_job(external)
    return tenant, external, job_id, result


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _storage_errors(handler: Handler) -> Handler:
    """Answer 503 while storage is unreachable, 502 for a stored result that cannot be read."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.StorageUnavailableError:
            return _storage_down()
        except UnreadableResultError:
            return _unreadable()

    return wrapped


async def _check(req: SubmitRequest, allow: AllowList) -> str | None:
    """Why this request is refused before anything else, or None."""
    if req.job_id is not None and not check_job_id(req.job_id):
        return "`job_id` is 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
    if req.model is not None and len(req.model) > 100:
        return "`model` is at most 100 characters"
    if req.callback_url is not None:
        return await check_callback(req.callback_url, allow)
    return None


async def check_callback(raw: str, allow: AllowList) -> str | None:
    """The SSRF guard of image URLs, at submit (the worker checks again at each delivery)."""
    try:
        url = URL(raw)
    except ValueError:
        return "`callback_url` is not a URL"
    if len(raw) > 2048 or url.scheme not in ("http", "https") or not url.host:
        return "`callback_url` is an http(s) URL of at most 2048 characters"
    try:
        await check_host(url.host, url.port or 443, allow)
    except errors.ImgqError as exc:
        return f"`callback_url`: {exc.message}"
    return None


async def _read(deps: ApiDeps, job_id: str) -> Result | None:
    try:
        return await deps.results.get(job_id)
    except ValueError as exc:  # pydantic's ValidationError on a stored document
        raise UnreadableResultError(str(type(exc).__name__)) from None


@_storage_errors
async def submit(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    try:
        req = await read_submit(request, max_body=deps.max_body, timeout=deps.body_timeout)
    except BodyTimeoutError as exc:
        resp = error_response(408, "request_timeout", str(exc))
        resp.force_close()  # the rest of a trickled body is not worth waiting for
        return resp
    except (ValueError, TypeError) as exc:
        return error_response(400, "invalid_job", str(exc)[:500])
    problem = await _check(req, AllowList(deps.settings.fetch_allow_hosts))
    if problem is not None:
        return error_response(400, "invalid_job", problem)
    status, doc, _ = await submit_for(deps, request[API_KEY], req)
    return web.json_response(doc, status=status)


async def submit_batch(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    if request.content_type != "application/json":
        return error_response(400, "invalid_job", 'a batch is a JSON body: {"jobs": [...]}')
    try:
        async with asyncio.timeout(deps.body_timeout):
            body = await request.json()
    except TimeoutError:
        resp = error_response(408, "request_timeout", "the request body did not arrive in time")
        resp.force_close()
        return resp
    except ValueError as exc:
        return error_response(400, "invalid_job", f"the body is not JSON: {exc}"[:500])
    items = body.get("jobs") if isinstance(body, dict) else None
    limit = deps.settings.api_batch_max_jobs
    if not isinstance(items, list) or not items or len(items) > limit:
        return error_response(400, "invalid_job", f"`jobs` is a list of 1 to {limit} jobs")
    out: list[dict[str, Any]] = []
    spent = False
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValueError("each job is a JSON object")
            raw = item.get("images") or []
            if not isinstance(raw, list):
                raise ValueError("`images` must be a list")
            req = _request_from(item, [_image_from_json(i) for i in raw])
            problem = await _check(req, AllowList(deps.settings.fetch_allow_hosts))
            if problem is not None:
                raise ValueError(problem)
        except (ValueError, TypeError) as exc:
            err = {"code": "invalid_job", "message": str(exc)[:500]}
            out.append({"index": index, "status": 400, "error": err})
            continue
        try:
            status, doc, code = await submit_for(deps, request[API_KEY], req, budget_spent=spent)
        except errors.StorageUnavailableError:
            err = {"code": "storage_unavailable", "message": "storage unavailable; retry"}
            out.append({"index": index, "status": 503, "error": err})
            continue
        except UnreadableResultError:
            err = {"code": "result_unreadable", "message": "the stored result cannot be read"}
            out.append({"index": index, "status": 502, "error": err})
            continue
        spent = spent or code == "budget_exceeded"
        out.append({"index": index, "status": status, "job": doc})
    return web.json_response({"jobs": out})


def _wait_seconds(raw: str) -> float | None:
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if not math.isfinite(seconds):  # a NaN deadline is never reached
        return None
    return min(max(seconds, 0.0), MAX_WAIT_SECONDS)


@_storage_errors
async def get_job(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    seconds = 0.0
    if (wait := request.query.get("wait")) is not None:
        parsed = _wait_seconds(wait)
        if parsed is None:
            return error_response(400, "invalid_job", "`wait` is a number of seconds")
        seconds = parsed
    if isinstance(found := await _existing(request), web.Response):
        return found
    tenant, external, job_id, result = found
    if seconds > 0 and not result.done:
        waited = await deps.hub.wait(job_id, seconds) or await _read(deps, job_id)
        if waited is None:  # expired or deleted while waited for
            return _no_job(external)
        result = waited
    return web.json_response(public_doc(result, tenant))


async def list_jobs(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    tenant = tenant_of(request[API_KEY])
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        return error_response(400, "invalid_request", f"`status` is one of {', '.join(STATUSES)}")
    raw_limit, raw_cursor = request.query.get("limit", "20"), request.query.get("cursor")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        return error_response(400, "invalid_request", "`limit` is a whole number from 1 to 100")
    if raw_cursor is not None and not (raw_cursor.isdigit() and len(raw_cursor) < 19):
        return error_response(400, "invalid_request", "`cursor` is a `next_cursor` given before")
    try:
        page = await deps.jobs.page(
            tenant,
            deps.results,
            status=status,
            limit=int(raw_limit),
            cursor=int(raw_cursor) if raw_cursor is not None else None,
        )
    except errors.StorageUnavailableError:
        return _storage_down()
    except ValueError:
        return error_response(502, "result_unreadable", "a stored result cannot be read")
    docs = [public_doc(r, tenant) for r in page.results]
    return web.json_response({"jobs": docs, "next_cursor": page.next_cursor})


@_storage_errors
async def cancel_job(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    if isinstance(found := await _existing(request), web.Response):
        return found
    tenant, external, job_id, result = found
    outcome = "done" if result.done else await deps.jobs.cancel(job_id)
    if outcome != "cancelled":
        why = "is running" if outcome == "running" else f"is {result.status}"
        if outcome == "unknown":
            why = "is not in the online queue"
        return error_response(409, "not_cancellable", f"job {external!r} {why}")
    final = cancelled(result, time.time())
    await deps.results.put(final)
    await deps.events.publish(job_id, "failed")
    await deps.budgets.release(job_id)
    lifetime = deps.settings.webhook_lifetime_seconds
    await queue_webhook(deps.redis, job_id, public_doc(final, tenant), tenant, lifetime)
    return web.json_response(public_doc(final, tenant))


@_storage_errors
async def job_events(request: web.Request) -> web.StreamResponse:
    """``status`` at each change; for a job submitted with ``stream``, ``delta`` events with
    its text as it comes (from when the client connected: pub/sub keeps no history)."""
    deps = request.app[DEPS]
    # Storage errors are answered by _storage_errors here: the stream has not started yet.
    if isinstance(found := await _existing(request), web.Response):
        return found
    tenant, _, job_id, result = found
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    if result.done:
        await resp.write(sse("status", public_doc(result, tenant)))
        await resp.write_eof()
        return resp
    await relay_events(resp, deps, request.app[STREAMS], job_id, result, tenant)
    await resp.write_eof()
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/jobs/batch", submit_batch)
    app.router.add_post("/v1/jobs", submit)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_delete("/v1/jobs/{job_id}", cancel_job)
    app.router.add_get("/v1/jobs/{job_id}/events", job_events)
    # One delta subscription per process, like the wait hub's (shared/stream_hub.py); closed
    # at shutdown, before the Redis pool it borrows a connection from.
    hub = StreamHub(app[DEPS].redis)
    app[STREAMS] = hub

    async def close_streams(app: web.Application) -> None:
        await hub.aclose()

    app.on_shutdown.append(close_streams)


__all__ = ["DEPS", "add_routes"]
