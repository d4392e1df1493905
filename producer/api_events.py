"""The event stream of one job (``GET /v1/jobs/{job_id}/events``, routed in api_jobs).

``status`` with the job's document at each change, and for a job submitted with ``stream``
(issue 11) ``delta`` with its text as it comes, relayed from the job's pub/sub channel by the
process's ``StreamHub``. The stream ends after the final status (or after
``MAX_STREAM_SECONDS``: the client reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from producer.api_submit import ApiDeps
from producer.tenant_jobs import public_doc
from shared import errors
from shared.job_stream import Delta
from shared.jobs import Result
from shared.storage.wait_hub import UnreadableResultError, read_result
from shared.stream_hub import StreamHub

MAX_STREAM_SECONDS = 300.0  # an event stream ends after this; the client reconnects
PING_SECONDS = 15.0


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def relay_events(
    resp: web.StreamResponse,
    deps: ApiDeps,
    hub: StreamHub,
    job_id: str,
    result: Result,
    tenant: str | None,
) -> None:
    """Write the events of ``job_id`` (stored id; ``result`` as read) until it is final."""
    items: asyncio.Queue[Any] = asyncio.Queue()  # Delta | Result | None
    # Subscribed (confirmed) before the first event is written: a client that has read it gets
    # every delta published from then on. The channel is the stored, tenant-scoped id's.
    async with hub.watch(job_id, items):
        watcher = asyncio.get_running_loop().create_task(_watch_status(deps, job_id, items))
        try:
            await _relay(resp, items, result, tenant)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _tail(result: Result, seen: tuple[int, int] | None) -> Delta | None:
    """The end of the final attempt's text that the live deltas have not brought yet.

    Deltas and status events travel on different subscriptions, so the final status can
    overtake the last delta; the stored text completes what the client has."""
    text = result.output_text
    if seen is None or result.status != "succeeded" or text is None:
        return None
    attempt, offset = seen
    if attempt != result.attempts or offset >= len(text):
        return None
    return Delta(attempt, offset, text[offset:])


async def _watch_status(deps: ApiDeps, job_id: str, out: asyncio.Queue[Any]) -> None:
    """Put the job's document in ``out`` each second and at once when it is final; None
    when it expired or was deleted."""
    while True:
        try:
            got = await deps.hub.wait(job_id, 1.0) or await read_result(deps.results, job_id)
        except (errors.StorageUnavailableError, UnreadableResultError):
            await asyncio.sleep(1.0)  # shown as no change; the stream ends at its deadline
            continue
        out.put_nowait(got)
        if got is None or got.done:
            return


async def _relay(
    resp: web.StreamResponse, items: asyncio.Queue[Any], result: Result, tenant: str | None
) -> None:
    """Write status changes and deltas until the final status (or the stream's deadline)."""
    loop = asyncio.get_running_loop()
    end, ping = loop.time() + MAX_STREAM_SECONDS, loop.time() + PING_SECONDS
    await resp.write(sse("status", public_doc(result, tenant)))
    last, seen = result.status, None
    while (now := loop.time()) < end:
        try:
            async with asyncio.timeout(min(ping, end) - now):
                item = await items.get()
        except TimeoutError:
            if loop.time() >= ping:
                await resp.write(b": ping\n\n")
                ping = loop.time() + PING_SECONDS
            continue
        if item is None:  # expired or deleted while watched
            return
        if isinstance(item, Delta):
            await resp.write(sse("delta", item.to_json()))
            seen = (item.attempt, item.offset + len(item.text))
            continue
        if item.done and (tail := _tail(item, seen)) is not None:
            await resp.write(sse("delta", tail.to_json()))
        if item.status != last:
            await resp.write(sse("status", public_doc(item, tenant)))
            last = item.status
        if item.done:
            return
