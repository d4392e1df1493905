"""OpenAI's Batch API over HTTP: create, retrieve, list, cancel; and ``/_sim/batch`` (admin).

The batches themselves run in simulator/batch_runner.py. ``GET /_sim/batch`` shows the settings
and counters (batches created, lines answered, images seen), ``POST /_sim/batch`` changes
settings (timing and faults, see simulator/batch_state.BatchSimSettings), ``POST
/_sim/batch/reset`` forgets every batch and file.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, fields
from typing import Any

from aiohttp import web

from simulator import errors
from simulator.batch_lines import LoadImages
from simulator.batch_runner import spawn
from simulator.batch_state import (
    BATCHES,
    ENDPOINTS,
    TERMINAL,
    BatchSimSettings,
    BatchState,
    SimBatch,
    new_batch,
    now_s,
    settings_from_json,
)
from simulator.files_api import FILES
from simulator.state import STATE, check_auth


async def _read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise errors.invalid_json() from None
    if not isinstance(body, dict):
        raise errors.invalid_json()
    return body


async def _create(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    body = await _read_json(request)
    file_id = body.get("input_file_id")
    endpoint = body.get("endpoint")
    window = body.get("completion_window")
    metadata = body.get("metadata")
    if endpoint not in ENDPOINTS:
        raise errors.bad_request(
            f"Invalid value: '{endpoint}'. Supported values are: {', '.join(ENDPOINTS)}.",
            param="endpoint",
            code="invalid_value",
        )
    if window != "24h":
        raise errors.bad_request(
            f"Invalid value: '{window}'. Supported values are: '24h'.",
            param="completion_window",
            code="invalid_value",
        )
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > 16
        or not all(
            isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
        )
    ):
        raise errors.bad_request("Invalid 'metadata': at most 16 string pairs.", param="metadata")
    f = request.app[FILES].files.get(str(file_id))
    if f is None:
        raise errors.ApiError(404, f"No such File object: {file_id}", param="input_file_id")
    if f.purpose != "batch":
        raise errors.bad_request(
            f"File {file_id} has purpose '{f.purpose}'; a batch needs purpose 'batch'.",
            param="input_file_id",
        )
    batch = new_batch(f.id, endpoint, window, metadata)
    bs = request.app[BATCHES]
    bs.batches[batch.obj["id"]] = batch
    bs.created += 1
    spawn(request.app, batch)
    if bs.settings.create_delay_s:  # fault: created, but the answer is late (or never read)
        await asyncio.sleep(bs.settings.create_delay_s)
    return web.json_response(batch.obj)


def _get(request: web.Request) -> SimBatch:
    bid = request.match_info["batch_id"]
    batch = request.app[BATCHES].batches.get(bid)
    if batch is None:
        raise errors.ApiError(404, f"No batch found with id '{bid}'.", param="batch_id")
    return batch


async def _retrieve(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    return web.json_response(_get(request).obj)


async def _cancel(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    batch = _get(request)
    status = batch.obj["status"]
    if status in TERMINAL:
        raise errors.ApiError(
            409, f"Cannot cancel a batch with status '{status}'.", code="batch_not_cancellable"
        )
    if status != "cancelling":
        batch.obj["status"], batch.obj["cancelling_at"] = "cancelling", now_s()
        batch.cancel.set()
    return web.json_response(batch.obj)


async def _list(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    try:
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
    except ValueError:
        raise errors.bad_request("Invalid 'limit': expected an integer.", param="limit") from None
    items = list(reversed(request.app[BATCHES].batches.values()))  # newest first
    after = request.query.get("after")
    if after:
        ids = [b.obj["id"] for b in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return web.json_response(
        {
            "object": "list",
            "data": [b.obj for b in page],
            "first_id": page[0].obj["id"] if page else None,
            "last_id": page[-1].obj["id"] if page else None,
            "has_more": len(items) > limit,
        }
    )


async def _admin_get(request: web.Request) -> web.Response:
    bs, files = request.app[BATCHES], request.app[FILES]
    settings = asdict(bs.settings)
    settings["fail_uploads"] = files.fail_uploads
    settings["upload_delay_s"] = files.upload_delay_s
    return web.json_response(
        {"settings": settings, **bs.counters(), "uploads": files.uploads, "files": len(files.files)}
    )


async def _admin_set(request: web.Request) -> web.Response:
    body = await _read_json(request)
    bs, files = request.app[BATCHES], request.app[FILES]
    names = {f.name for f in fields(BatchSimSettings)}
    unknown = set(body) - names
    if unknown:
        raise errors.bad_request(f"unknown batch settings: {sorted(unknown)}")
    for name, value in body.items():
        setattr(bs.settings, name, value)
    if "fail_uploads" in body:
        files.fail_uploads = int(body["fail_uploads"])
    if "upload_delay_s" in body:
        files.upload_delay_s = float(body["upload_delay_s"])
    if "seed" in body:
        bs.rng.seed(body["seed"])
    return await _admin_get(request)


async def _admin_reset(request: web.Request) -> web.Response:
    """Forget every batch and file and zero the counters (settings are kept)."""
    bs, files = request.app[BATCHES], request.app[FILES]
    for task in list(bs.tasks):
        task.cancel()
    bs.batches.clear()
    bs.images_seen.clear()
    bs.created = bs.lines_answered = bs.prompt_tokens = bs.completion_tokens = 0
    files.files.clear()
    files.uploads = 0
    return await _admin_get(request)


async def _stop_tasks(app: web.Application) -> None:
    for task in list(app[BATCHES].tasks):
        task.cancel()


def add_routes(app: web.Application, load_images: LoadImages) -> None:
    """The Batch API routes; ``load_images``: the online handler's image loader (same checks)."""
    settings = settings_from_json(app[STATE].config.batch_json)
    app[BATCHES] = BatchState(
        settings=settings, rng=random.Random(settings.seed), load_images=load_images
    )
    app.router.add_post("/v1/batches", _create)
    app.router.add_get("/v1/batches", _list)
    app.router.add_get("/v1/batches/{batch_id}", _retrieve)
    app.router.add_post("/v1/batches/{batch_id}/cancel", _cancel)
    app.router.add_get("/_sim/batch", _admin_get)
    app.router.add_post("/_sim/batch", _admin_set)
    app.router.add_post("/_sim/batch/reset", _admin_reset)
    app.on_cleanup.append(_stop_tasks)
