"""``imgq dlq``: the dead-letter set (jobs failed as ``poison_job``, ``expired``, unreadable).

$ imgq dlq list
JOB                               DEAD SINCE (UTC)      CODE         DELIVERIES
3f2a9c0d11e4b7a2...               2026-11-26 10:41:07   poison_job   6
$ imgq dlq show 3f2a9c0d11e4b7a2...     # the stored result and the job's state, as JSON
$ imgq dlq retry 3f2a9c0d11e4b7a2...    # queued again from its stored spec, deliveries reset
                                        # (a budgeted key's job reserves its estimate again)
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


async def retry_one(settings: Any, r: Any, app: Any, job_id: str) -> tuple[bool, str]:
    """Queue one dead-lettered job again: (queued, the line to print).

    A tenant's job reserves its estimate again first (its first reservation was settled or
    refunded when it died): when the key's budget no longer holds it, the job ends
    ``budget_exceeded`` with no call and stays dead-lettered, to retry once the budget allows.
    """
    from shared import dlq as dead
    from shared.budget import Budgets
    from shared.errors import BudgetExceededError
    from shared.jobs import ErrorInfo, Result
    from shared.jobstate import load_spec, reopen, send_job
    from shared.storage import build_stores

    _, results, events = build_stores(settings, r)
    job = await load_spec(r, job_id)
    if job is None:
        return False, f"{job_id}: no stored spec (expired or unknown): submit it again"
    budgets = Budgets(r)
    held = await budgets.reserve_again(job_id) if job.tenant is not None else None
    if held is not None and not held.ok:
        exc = BudgetExceededError(
            f"retried, but this API key's budget of ${held.limit_usd or 0:.2f} is spent "
            f"(${held.spent_usd:.4f} used or reserved; this job needs up to ${held.amount_usd:.4f})"
        )
        failed = await results.get(job_id) or Result(job_id=job_id, model=job.model)
        failed.status = "failed"
        failed.error = ErrorInfo(code=exc.code, message=exc.message, retryable=False)
        failed.timings.finished_at = time.time()
        await results.put(failed, force=True)
        await events.publish(job_id, "failed")
        return False, f"{job_id}: budget_exceeded, not queued (no call made): {exc.message}"
    try:
        job.expires_at = time.time() + min(
            settings.job_deadline_seconds, settings.image_ttl_seconds
        )
        await reopen(r, job)
        queued = Result(job_id=job_id, model=job.model, metadata=job.metadata)
        queued.sources = [s.source for s in job.images]
        queued.timings.queued_at = time.time()
        await results.put(queued, force=True)
        await asyncio.to_thread(send_job, app, job)
    except BaseException:
        if held is not None:  # not queued: the reservation goes back
            await budgets.release(job_id)
        raise
    await dead.remove(r, job_id)
    note = "" if held is None else f" (${held.amount_usd:.4f} reserved of its key's budget)"
    return True, f"{job_id}: queued again{note}"


@dlq.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Every dead-lettered job.")
def retry(job_ids: tuple[str, ...], retry_all: bool) -> None:
    """Queue dead-lettered jobs again from their stored spec (deliveries reset).

    A job of a budgeted key reserves its estimate again; one the budget no longer holds fails
    ``budget_exceeded`` without a call and stays here. Exit code 1 when any job was not queued.
    """
    from shared.broker import create_celery

    async def go(settings: Any, r: Any) -> list[tuple[bool, str]]:
        from shared import dlq as dead

        ids = [j for j, _ in await dead.entries(r, limit=1_000_000)] if retry_all else job_ids
        app = create_celery(settings, settings.effective_broker_url or settings.redis_url)
        try:
            return [await retry_one(settings, r, app, job_id) for job_id in ids]
        finally:
            app.close()

    if not job_ids and not retry_all:
        raise click.UsageError("give job ids, or --all")
    outcomes = _run(go)
    for _, line in outcomes:
        click.echo(line)
    if not all(ok for ok, _ in outcomes):
        raise SystemExit(1)


@dlq.command()
@click.confirmation_option(prompt="Forget every dead-lettered job?")
def purge() -> None:
    """Forget every entry (their results stay, with their error code)."""
    from shared import dlq as dead

    async def go(settings: Any, r: Any) -> int:
        return await dead.purge(r)

    click.echo(f"{_run(go)} entries removed")
