"""The batcher: seals pending batch jobs into Batch API batches and walks each batch to the end.

Runs in every worker on its event loop; only the elected leader works (workers/batch_leader.py).
Each tick: seal the groups that are full, have lingered long enough, or were flushed
(``imgq batches flush``); then advance every unfinished batch by one step of its state machine
(shared/batch_store.py; each API step is in workers/batch_steps.py):

  sealed/uploading  write the JSONL, look for ``imgq-<batch>.jsonl`` among the uploaded files
                    (a crash after the upload left it there), else upload it (purpose=batch)
  uploaded/creating wait while the learned enqueued-token limit is full; look for a batch whose
                    metadata names this imgq batch and attempt, else create it (24h window)
  created           poll with backoff; a ``token_limit_exceeded`` failure teaches the limit and
                    sends the batch back to ``uploaded`` (same file, next attempt)
  downloading       map the output and error files to the jobs (workers/batch_results.py)

Every step is a compare-and-set, and every API step looks before it acts, so a batcher that
dies anywhere is resumed by the next leader without uploading or creating anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import openai
from celery import Celery

from shared.batch_store import BatchStore
from shared.broker import TASK_NAME, create_celery
from shared.jobs import Job
from shared.settings import Settings
from workers.batch_leader import Leadership
from workers.batch_results import Requeue
from workers.batch_route import store_for
from workers.batch_seal import seal_groups
from workers.batch_steps import TERMINAL, BatchSteps
from workers.deps import WorkerDeps

log = logging.getLogger(__name__)
# Gauge labels: imgq's own states before OpenAI has the batch, then OpenAI's statuses.
BATCH_STATUSES = ("sealed", "uploading", "uploaded", "creating", "validating", "in_progress",
                  "finalizing", "cancelling", *TERMINAL)  # fmt: skip


class Batcher:
    def __init__(self, deps: WorkerDeps, requeue: Requeue) -> None:
        self.deps = deps
        self.requeue = requeue
        self.store: BatchStore = store_for(deps)
        self.leadership = Leadership(deps.redis, lease_seconds=deps.settings.batch_leader_seconds)
        self.steps = BatchSteps(deps, self.store, self.leadership, requeue)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.leading = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="imgq-batcher")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        with contextlib.suppress(Exception):
            await self.leadership.resign()

    async def run(self) -> None:
        s = self.deps.settings
        keep = asyncio.get_running_loop().create_task(self._keep_leading())
        try:
            while not self._stop.is_set():
                try:
                    if self.leading:
                        await self.tick()
                except Exception:  # a bad tick must never stop the batcher
                    log.exception("batcher tick failed")
                await self._sleep(s.batch_tick_seconds)
        finally:
            keep.cancel()

    async def _keep_leading(self) -> None:
        # Renewed on its own task, so a long step (a 200 MB upload, a 50,000-job download)
        # never outlives the lease and lets a second leader start the same step.
        period = self.deps.settings.batch_leader_seconds / 3
        while not self._stop.is_set():
            try:
                self.leading = await self.leadership.hold()
            except Exception:
                self.leading = False
                log.warning("batcher: could not renew leadership", exc_info=True)
            await self._sleep(period)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def tick(self) -> None:
        flush = await self.store.take_flush()
        await seal_groups(self.store, self.deps.account, self.deps.settings, flush=flush)
        for bid in await self.store.active():
            if self._stop.is_set() or not self.leading:
                return
            try:
                await self.advance(bid)
            except (openai.APIError, OSError) as exc:
                await self._backoff(bid, f"{type(exc).__name__}: {exc}")
        await self._report()

    # -- the state machine -------------------------------------------------------------------
    async def advance(self, bid: str) -> None:
        rec = await self.store.record(bid)
        if rec is None:
            await self.store.finish(bid)  # its record expired: nothing left to do
            return
        if float(rec.get("next_try_at") or 0) > time.time():
            return
        state = rec["state"]
        if (
            not rec.get("cancel_requested")
            and state in ("sealed", "uploading", "uploaded", "created")
            and self._due_poll(rec)
            and await self.store.all_jobs_finished(bid)
        ):
            # Every job was cancelled by its owner: only now is the batch itself cancelled.
            log.info("batch %s: all its jobs were cancelled; cancelling the batch", bid)
            await self.store.update(bid, cancel_requested="1")
            rec["cancel_requested"] = "1"
        if rec.get("cancel_requested") and state in ("sealed", "uploading", "uploaded"):
            # Not at OpenAI yet: nothing to cancel there; its jobs fail batch_cancelled.
            await self.store.transition(bid, state, state="downloading", openai_status="cancelled")
            return
        steps = self.steps
        step = {
            "sealed": steps.upload,
            "uploading": steps.upload,
            "uploaded": steps.create,
            "creating": steps.create,
            "created": steps.poll,
            "downloading": steps.download,
        }.get(state)
        if step is None:
            await self.store.finish(bid)
            return
        await step(bid, rec)
        if rec.get("errors") not in (None, "", "0"):
            await self.store.update(bid, errors=0)  # it went through: back off from scratch

    def _due_poll(self, rec: dict[str, str]) -> bool:
        # Before creation every tick; once created, on the poll schedule (the check reads the
        # state of every job of the batch).
        return rec["state"] != "created" or float(rec.get("next_poll_at") or 0) <= time.time()

    async def _backoff(self, bid: str, error: str) -> None:
        rec = await self.store.record(bid) or {}
        n = int(rec.get("errors") or 0) + 1
        s = self.deps.settings
        delay = min(s.batch_poll_max_seconds, s.batch_poll_min_seconds * 2 ** min(n, 16))
        log.warning("batch %s: %s; next try in %.1fs", bid, error, delay)
        await self.store.update(
            bid, errors=n, last_error=error[:500], next_try_at=time.time() + delay
        )

    async def _report(self) -> None:
        by_status: dict[str, int] = {}
        waiting = await self.store.pending_count()
        for bid in await self.store.active():
            rec = await self.store.record(bid)
            if rec is None:
                continue
            status = rec.get("openai_status") or rec["state"]
            by_status[status] = by_status.get(status, 0) + 1
            waiting += int(rec.get("jobs") or 0)
        for status in BATCH_STATUSES:
            self.deps.metrics.batches.labels(status=status).set(by_status.get(status, 0))
        self.deps.metrics.jobs_waiting.labels(route="batch").set(waiting)


def celery_requeue(settings: Settings, broker_url: str | None) -> Requeue:
    """Send a job back to the broker (its re-route online), from the batcher's loop."""
    app: list[Celery] = []

    def send(payload: dict[str, Any], queue: str) -> None:
        if not app:
            app.append(create_celery(settings, broker_url or settings.require_redis_url()))
        app[0].send_task(TASK_NAME, args=[payload], queue=queue)

    async def requeue(job: Job) -> None:
        await asyncio.to_thread(send, job.model_dump(mode="json"), job.priority)

    return requeue


def start_batcher(deps: WorkerDeps, broker_url: str | None) -> Batcher | None:
    """Start this worker's batcher on the running loop (it works only while elected)."""
    if not deps.settings.batcher_enabled:
        return None
    batcher = Batcher(deps, celery_requeue(deps.settings, broker_url))
    batcher.start()
    return batcher
