"""OpenAI's Files API, in memory: upload (multipart), list, retrieve, content, delete.

Files live on the app under :data:`FILES` until deleted or the simulator stops. Ids are
``file-<hex>``; ``GET /v1/files`` pages newest first with ``after``/``limit`` like OpenAI.
Faults (``POST /_sim/batch``): ``{"fail_uploads": N}`` answers the next N uploads with a 500
(the file is not stored); ``{"upload_delay_s": S}`` stores each upload, then answers S seconds
late, so a client can die after the upload and before it learns the file id.

>>> store = FileStore()
>>> f = store.add(b'{"a": 1}\\n', "in.jsonl", "batch", now=1700000000)
>>> (f.object()["bytes"], f.object()["purpose"], f.object()["status"])
(9, 'batch', 'processed')
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from simulator import errors
from simulator.state import STATE, check_auth

_PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}
# The Batch API's own limit on an input file.
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024


@dataclass
class StoredFile:
    id: str
    data: bytes
    filename: str
    purpose: str
    created_at: int

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class FileStore:
    """Every stored file by id (insertion order = creation order), and upload counters."""

    files: dict[str, StoredFile] = field(default_factory=dict)
    uploads: int = 0  # successful uploads (tests assert "never uploaded twice")
    fail_uploads: int = 0  # fault: the next N uploads answer 500
    upload_delay_s: float = 0.0  # fault: an upload is stored, then answered this late

    def add(
        self, data: bytes, filename: str, purpose: str, *, now: int | None = None
    ) -> StoredFile:
        f = StoredFile(
            id=f"file-{os.urandom(12).hex()}",
            data=data,
            filename=filename,
            purpose=purpose,
            created_at=int(time.time()) if now is None else now,
        )
        self.files[f.id] = f
        return f

    def get(self, file_id: str) -> StoredFile:
        f = self.files.get(file_id)
        if f is None:
            raise errors.ApiError(404, f"No such File object: {file_id}", param="id", code=None)
        return f


FILES = web.AppKey("simulator_files", FileStore)


def files_of(app: web.Application) -> FileStore:
    return app[FILES]


async def _upload(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    store = request.app[FILES]
    if not request.content_type.startswith("multipart/"):
        raise errors.bad_request(
            "Invalid Content-Type header (expected multipart/form-data).", param="file"
        )
    purpose, filename, data = None, "upload", b""
    got_file = False
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.read()).decode()
        elif part.name == "file":
            filename = part.filename or "upload"
            data = bytes(await part.read())
            got_file = True
    if not got_file:
        raise errors.bad_request("Missing required parameter: 'file'.", param="file")
    if purpose not in _PURPOSES:
        raise errors.bad_request(
            f"'{purpose}' is not one of {sorted(_PURPOSES)} - 'purpose'", param="purpose"
        )
    if purpose == "batch" and len(data) > MAX_BATCH_FILE_BYTES:
        raise errors.bad_request(
            f"File is too large ({len(data)} bytes); the maximum for purpose 'batch' is "
            f"{MAX_BATCH_FILE_BYTES} bytes.",
            param="file",
        )
    if store.fail_uploads > 0:
        store.fail_uploads -= 1
        raise errors.server_error()
    store.uploads += 1
    stored = store.add(data, filename, purpose)
    if store.upload_delay_s:  # the client may give up (or die) before it learns the id
        await asyncio.sleep(store.upload_delay_s)
    return web.json_response(stored.object())


async def _list(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    q = request.query
    purpose = q.get("purpose")
    try:
        limit = max(1, min(10_000, int(q.get("limit", "10000"))))
    except ValueError:
        raise errors.bad_request("Invalid 'limit': expected an integer.", param="limit") from None
    items = [f for f in request.app[FILES].files.values() if purpose in (None, f.purpose)]
    if q.get("order", "desc") == "desc":
        items.reverse()
    after = q.get("after")
    if after:
        ids = [f.id for f in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return web.json_response(
        {
            "object": "list",
            "data": [f.object() for f in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(items) > limit,
        }
    )


async def _retrieve(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    return web.json_response(request.app[FILES].get(request.match_info["file_id"]).object())


async def _content(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    f = request.app[FILES].get(request.match_info["file_id"])
    return web.Response(body=f.data, content_type="application/octet-stream")


async def _delete(request: web.Request) -> web.Response:
    check_auth(request, request.app[STATE].config)
    store = request.app[FILES]
    f = store.get(request.match_info["file_id"])
    del store.files[f.id]
    return web.json_response({"id": f.id, "object": "file", "deleted": True})


def add_routes(app: web.Application) -> None:
    import json

    batch = json.loads(app[STATE].config.batch_json or "{}")  # its upload faults live here
    app[FILES] = FileStore(
        fail_uploads=int(batch.get("fail_uploads", 0)),
        upload_delay_s=float(batch.get("upload_delay_s", 0.0)),
    )
    app.router.add_post("/v1/files", _upload)
    app.router.add_get("/v1/files", _list)
    app.router.add_get("/v1/files/{file_id}", _retrieve)
    app.router.add_get("/v1/files/{file_id}/content", _content)
    app.router.add_delete("/v1/files/{file_id}", _delete)
