"""``imgq dlq``: the dead-letter set (jobs failed as ``poison_job``, ``expired``, unreadable).

$ imgq dlq list
JOB                               DEAD SINCE (UTC)      CODE         DELIVERIES
3f2a9c0d11e4b7a2...               2026-11-26 10:41:07   poison_job   6
$ imgq dlq show 3f2a9c0d11e4b7a2...     # the stored result and the job's state, as JSON
$ imgq dlq retry 3f2a9c0d11e4b7a2...    # queued again from its stored spec, deliveries reset
$ imgq dlq purge                        # forget every entry (results stay, with their error)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

T = TypeVar("T")


def _run(fn: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run ``fn(settings, redis)`` against the configured (or embedded) Redis."""
    import redis.asyncio as aioredis

    from shared.embedded_redis import with_embedded_redis
    from shared.settings import Settings

    settings = with_embedded_redis(Settings())

    async def go() -> T:
        r = aioredis.from_url(settings.require_redis_url())
        try:
            return await fn(settings, r)
        finally:
            await r.aclose()

    return asyncio.run(go())


@click.group(name="dlq")
def dlq() -> None:
    """The dead-letter set: jobs that crashed IMGQ_MAX_DELIVERIES times, expired or unreadable."""


@dlq.command(name="list")
@click.option("--limit", default=100, show_default=True, help="Oldest entries to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
def list_cmd(limit: int, as_json: bool) -> None:
    """List dead-lettered jobs, oldest first."""
    from shared import dlq as dead
    from shared.jobstate import read_state
    from shared.storage import build_stores

    async def go(settings: Any, r: Any) -> list[dict[str, Any]]:
        _, results, _ = build_stores(settings, r)
        rows = []
        for job_id, at in await dead.entries(r, limit=limit):
            res = await results.get(job_id)
            state = await read_state(r, job_id)
            code = res.error.code if res is not None and res.error is not None else "-"
            rows.append({"job_id": job_id, "dead_at": at, "code": code,
                         "deliveries": int(state.get("deliveries", 0) or 0)})  # fmt: skip
        return rows

    rows = _run(go)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("the dead-letter set is empty")
        return
    click.echo(f"{'JOB':34}{'DEAD SINCE (UTC)':22}{'CODE':20}DELIVERIES")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["dead_at"]))
        click.echo(f"{row['job_id']:34}{when:22}{row['code']:20}{row['deliveries']}")


@dlq.command()
@click.argument("job_id")
def show(job_id: str) -> None:
    """The job's stored result and state (spec included), as JSON."""
    from shared import dlq as dead
    from shared.jobstate import read_state
    from shared.storage import build_stores

    async def go(settings: Any, r: Any) -> dict[str, Any]:
        _, results, _ = build_stores(settings, r)
        res = await results.get(job_id)
        state = await read_state(r, job_id)
        spec = json.loads(state.pop("spec")) if "spec" in state else None
        return {
            "job_id": job_id,
            "dead_lettered": await dead.contains(r, job_id),
            "result": res.model_dump(mode="json") if res is not None else None,
            "state": state,
            "spec": spec,
        }

    click.echo(json.dumps(_run(go), indent=2))


@dlq.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Every dead-lettered job.")
def retry(job_ids: tuple[str, ...], retry_all: bool) -> None:
    """Queue dead-lettered jobs again from their stored spec (deliveries reset)."""
    from shared.broker import create_celery
    from shared.jobs import Result
    from shared.jobstate import load_spec, reopen, send_job
    from shared.storage import build_stores

    async def go(settings: Any, r: Any) -> list[str]:
        from shared import dlq as dead

        _, results, _ = build_stores(settings, r)
        ids = [j for j, _ in await dead.entries(r, limit=1_000_000)] if retry_all else job_ids
        app = create_celery(settings, settings.effective_broker_url or settings.redis_url)
        done = []
        try:
            for job_id in ids:
                job = await load_spec(r, job_id)
                if job is None:
                    click.echo(f"{job_id}: no stored spec (expired or unknown): submit it again")
                    continue
                job.expires_at = time.time() + min(
                    settings.job_deadline_seconds, settings.image_ttl_seconds
                )
                await reopen(r, job)
                queued = Result(job_id=job_id, model=job.model, metadata=job.metadata)
                queued.sources = [s.source for s in job.images]
                queued.timings.queued_at = time.time()
                await results.put(queued, force=True)
                await asyncio.to_thread(send_job, app, job)
                await dead.remove(r, job_id)
                done.append(job_id)
        finally:
            app.close()
        return done

    if not job_ids and not retry_all:
        raise click.UsageError("give job ids, or --all")
    for job_id in _run(go):
        click.echo(f"{job_id}: queued again")


@dlq.command()
@click.confirmation_option(prompt="Forget every dead-lettered job?")
def purge() -> None:
    """Forget every entry (their results stay, with their error code)."""
    from shared import dlq as dead

    async def go(settings: Any, r: Any) -> int:
        return await dead.purge(r)

    click.echo(f"{_run(go)} entries removed")
