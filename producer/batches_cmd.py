"""``imgq batches``: the batch route's batches (OpenAI Batch API), read from Redis.

    $ imgq batches list
    BATCH                    STATE    OPENAI       JOBS  DONE  FAILED  REROUTED  OPENAI BATCH
    ib_3f2a9c0d11e4b7a2c1d0  created  in_progress  400   -     -       -         batch_68d...
    $ imgq batches show ib_3f2a9c0d11e4b7a2c1d0     # the whole record, as JSON
    $ imgq batches cancel ib_3f2a9c0d11e4b7a2c1d0   # its unanswered jobs fail batch_cancelled
    $ imgq batches flush                            # send every waiting job now

The elected batcher (in the workers) does the work; these commands only read its records or
leave it a request (cancel, flush), so they need no API key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from shared.batch_store import BatchStore

T = TypeVar("T")
_COLUMNS = (
    ("BATCH", "id"), ("STATE", "state"), ("OPENAI", "openai_status"), ("JOBS", "jobs"),
    ("DONE", "succeeded"), ("FAILED", "failed"), ("REROUTED", "rerouted"),
    ("OPENAI BATCH", "openai_batch_id"),
)  # fmt: skip


def _run(fn: Callable[[BatchStore], Awaitable[T]]) -> T:
    from shared.embedded_redis import with_embedded_redis
    from shared.settings import Settings

    settings = with_embedded_redis(Settings())

    async def go() -> T:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.require_redis_url())
        try:
            return await fn(BatchStore(client, ttl_seconds=settings.result_ttl_seconds))
        finally:
            await client.aclose()

    return asyncio.run(go())


def render_table(records: list[dict[str, str]]) -> str:
    """Batch records as an aligned table (``-`` for what is not known yet).

    >>> print(render_table([{"id": "ib_1", "state": "sealed", "jobs": "3"}]))
    BATCH  STATE   OPENAI  JOBS  DONE  FAILED  REROUTED  OPENAI BATCH
    ib_1   sealed  -       3     -     -       -         -
    """
    rows = [tuple(h for h, _ in _COLUMNS)]
    rows += [tuple(r.get(k) or "-" for _, k in _COLUMNS) for r in records]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@click.group(name="batches")
def batches() -> None:
    """Batch API batches of the batch route (`imgq submit --route batch`)."""


@batches.command(name="list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The records as a JSON list.")
def list_cmd(limit: int, as_json: bool) -> None:
    """The newest batches, newest first, and how many jobs wait for one."""

    async def get(store: BatchStore) -> tuple[list[dict[str, str]], int]:
        return await store.list_batches(limit), await store.pending_count()

    records, waiting = _run(get)
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    click.echo(render_table(records) if records else "no batches yet")
    click.echo(f"{waiting} job(s) waiting for a batch", err=True)


@batches.command()
@click.argument("batch_id")
def show(batch_id: str) -> None:
    """One batch's whole record, its jobs' outcomes counted, as JSON."""

    async def get(store: BatchStore) -> dict[str, Any] | None:
        rec: dict[str, Any] | None = await store.record(batch_id)
        if rec is None:
            return None
        outcomes = list((await store.applied(batch_id)).values())
        rec["outcomes"] = {o: outcomes.count(o) for o in sorted(set(outcomes))}
        return rec

    rec = _run(get)
    if rec is None:
        raise click.ClickException(f"no batch {batch_id!r}")
    click.echo(json.dumps(rec, indent=2, sort_keys=True))


@batches.command()
@click.argument("batch_id")
def cancel(batch_id: str) -> None:
    """Cancel a batch: the batcher cancels it at OpenAI; unanswered jobs fail batch_cancelled."""
    if not _run(lambda store: store.request_cancel(batch_id)):
        raise click.ClickException(f"no unfinished batch {batch_id!r}")
    click.echo(f"cancel requested for {batch_id}")


@batches.command()
def flush() -> None:
    """Send every job waiting for a batch now, without waiting for the linger time."""
    _run(lambda store: store.request_flush())
    click.echo("flush requested: the batcher seals every waiting job on its next tick")
