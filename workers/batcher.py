"""The batcher: seals pending batch jobs into Batch API batches and walks each batch to the end.

Runs in every worker on its event loop; only the elected leader works (workers/batch_leader.py).
Each tick: seal the groups that are full, have lingered long enough, or were flushed
(``imgq batches flush``); then advance every unfinished batch by one step of its state machine
(shared/batch_store.py):

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
import re
import time
from typing import Any

import openai
from celery import Celery

from shared.batch_store import BatchStore
from shared.broker import TASK_NAME, create_celery
from shared.jobs import Job
from shared.settings import Settings
from workers.batch_leader import Leadership
from workers.batch_results import Requeue, apply_batch, parse_jsonl
from workers.batch_route import store_for
from workers.batch_seal import seal_groups
from workers.deps import WorkerDeps

log = logging.getLogger(__name__)
TERMINAL = ("completed", "failed", "expired", "cancelled")
# Gauge labels: imgq's own states before OpenAI has the batch, then OpenAI's statuses.
BATCH_STATUSES = ("sealed", "uploading", "uploaded", "creating", "validating", "in_progress",
                  "finalizing", "cancelling", *TERMINAL)  # fmt: skip
_LIMIT_RE = re.compile(r"Limit:\s*([\d,]+)\s*enqueued tokens")
LOOKBACK_SECONDS = 600  # how far back (created_at) to look for our own file or batch


def learned_limit(message: str) -> int | None:
    """The enqueued-token limit stated in OpenAI's ``token_limit_exceeded`` message.

    >>> learned_limit("Enqueued token limit reached for gpt-4o in organization org-x. "
    ...               "Limit: 90,000 enqueued tokens. Please try again later.")
    90000
    """
    m = _LIMIT_RE.search(message)
    return int(m.group(1).replace(",", "")) if m else None


class Batcher:
    def __init__(self, deps: WorkerDeps, requeue: Requeue) -> None:
        self.deps = deps
        self.requeue = requeue
        self.store: BatchStore = store_for(deps)
        self.leadership = Leadership(deps.redis, lease_seconds=deps.settings.batch_leader_seconds)
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
        step = {
            "sealed": self._upload,
            "uploading": self._upload,
            "uploaded": self._create,
            "creating": self._create,
            "created": self._poll,
            "downloading": self._download,
        }.get(state)
        if step is None:
            await self.store.finish(bid)
            return
        await step(bid, rec)
        if rec.get("errors") not in (None, "", "0"):
            await self.store.update(bid, errors=0)  # it went through: back off from scratch

    async def _still_owner(self, bid: str, state: str) -> bool:
        """Still the leader, and the batch still in ``state``: checked just before the call."""
        rec = await self.store.record(bid)
        return rec is not None and rec["state"] == state and await self.leadership.is_mine()

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

    async def _upload(self, bid: str, rec: dict[str, str]) -> None:
        filename = f"imgq-{bid}.jsonl"
        sealed = rec["state"] == "sealed"
        if sealed and not await self.store.transition(
            bid, "sealed", state="uploading", filename=filename
        ):
            return
        file_id = await self._find_file(filename, float(rec["created_at"]))
        if file_id is None:
            jobs = sorted((await self.store.jobs(bid)).keys())
            data = b"".join(x for x in await self.store.lines(jobs) if x is not None)
            if not data:  # every line expired: nothing to send
                await self.store.transition(
                    bid, "uploading", state="downloading", openai_status="failed"
                )
                return
            if not await self._still_owner(bid, "uploading"):
                return
            f = await self.deps.client.files.create(
                file=(filename, data, "application/jsonl"), purpose="batch"
            )
            file_id = f.id
            log.info("batch %s: uploaded %s (%d bytes)", bid, file_id, len(data))
        await self.store.transition(bid, "uploading", state="uploaded", file_id=file_id)

    async def _find_file(self, filename: str, since: float) -> str | None:
        async for f in self.deps.client.files.list(purpose="batch", order="desc"):
            if f.filename == filename:
                return f.id
            if f.created_at < since - LOOKBACK_SECONDS:
                break
        return None

    async def _enqueued_tokens(self, bid: str, account: str, model: str) -> int:
        total = 0
        for other in await self.store.active():
            if other == bid:
                continue
            rec = await self.store.record(other)
            if (
                rec is not None
                and rec.get("account") == account
                and rec.get("model") == model
                and rec["state"] in ("creating", "created")
                and rec.get("openai_status") not in TERMINAL
            ):
                total += int(rec.get("tokens") or 0)
        return total

    async def _create(self, bid: str, rec: dict[str, str]) -> None:
        s = self.deps.settings
        if rec["state"] == "uploaded":
            limit = await self.store.token_limit(rec["account"], rec["model"])
            if limit is not None:
                mine = int(rec.get("tokens") or 0)
                others = await self._enqueued_tokens(bid, rec["account"], rec["model"])
                if others and others + mine > limit:
                    await self.store.update(bid, next_try_at=time.time() + s.batch_poll_min_seconds)
                    return
            if not await self.store.transition(bid, "uploaded", state="creating"):
                return
        attempt = rec.get("attempt") or "1"
        found = await self._find_batch(bid, attempt, float(rec["created_at"]))
        if found is None:
            meta = {"imgq_batch_id": bid, "imgq_attempt": attempt}
            if not await self._still_owner(bid, "creating"):
                return
            found = await self.deps.client.batches.create(
                input_file_id=rec["file_id"],
                endpoint=rec["endpoint"],  # type: ignore[arg-type]
                completion_window="24h",
                metadata=meta,
            )
            log.info("batch %s: created %s (attempt %s)", bid, found.id, attempt)
        await self.store.transition(
            bid, "creating", state="created", openai_batch_id=found.id,
            openai_status=found.status, polls=0,
            next_poll_at=time.time() + s.batch_poll_min_seconds,
        )  # fmt: skip

    async def _find_batch(self, bid: str, attempt: str, since: float) -> Any:
        async for b in self.deps.client.batches.list(limit=100):
            meta = b.metadata or {}
            if meta.get("imgq_batch_id") == bid and meta.get("imgq_attempt") == attempt:
                return b
            if b.created_at < since - LOOKBACK_SECONDS:
                break
        return None

    async def _poll(self, bid: str, rec: dict[str, str]) -> None:
        s, now = self.deps.settings, time.time()
        if float(rec.get("next_poll_at") or 0) > now:
            return
        client = self.deps.client
        if rec.get("cancel_requested") and not rec.get("cancel_sent"):
            with contextlib.suppress(openai.ConflictError):  # already finished
                await client.batches.cancel(rec["openai_batch_id"])
            await self.store.update(bid, cancel_sent="1")
        b = await client.batches.retrieve(rec["openai_batch_id"])
        await self.store.touch_jobs(bid)  # hours in a batch are not a lost job
        polls = int(rec.get("polls") or 0) + 1
        delay = min(s.batch_poll_max_seconds, s.batch_poll_min_seconds * 1.5 ** min(polls, 30))
        counts = b.request_counts.model_dump() if b.request_counts else {}
        await self.store.update(
            bid, openai_status=b.status, polls=polls, next_poll_at=now + delay,
            request_counts=counts, output_file_id=b.output_file_id or "",
            error_file_id=b.error_file_id or "",
        )  # fmt: skip
        if b.status == "failed" and b.errors and b.errors.data:
            err = b.errors.data[0]
            limit = learned_limit(err.message or "") if err.code == "token_limit_exceeded" else None
            if limit is not None:
                await self.store.learn_token_limit(rec["account"], rec["model"], limit)
                if int(rec.get("tokens") or 0) > limit:
                    await self._over_limit(bid, rec)
                    return
                attempt = int(rec.get("attempt") or 1) + 1
                log.info("batch %s: enqueued-token limit %d learned; retry as attempt %d",
                         bid, limit, attempt)  # fmt: skip
                await self.store.transition(
                    bid, "created", state="uploaded", attempt=str(attempt),
                    next_try_at=now + s.batch_poll_min_seconds,
                )  # fmt: skip
                return
            await self.store.update(bid, last_error=f"{err.code}: {err.message}"[:500])
        if b.status in TERMINAL:
            await self.store.transition(bid, "created", state="downloading")

    async def _over_limit(self, bid: str, rec: dict[str, str]) -> None:
        """A batch larger than the whole limit: re-batch its jobs smaller (one job: fall back)."""
        if int(rec.get("jobs") or 0) <= 1:
            await self.store.transition(bid, "created", state="downloading")
            return
        n = await self.store.unseal(bid, rec["group"], "created")
        log.info("batch %s: over the enqueued-token limit, %d jobs re-batched", bid, n)
        if n >= 0 and rec.get("file_id"):
            with contextlib.suppress(openai.APIError):
                await self.deps.client.files.delete(rec["file_id"])

    async def _download(self, bid: str, rec: dict[str, str]) -> None:
        lines: dict[str, dict[str, Any]] = {}
        for fid in (rec.get("output_file_id"), rec.get("error_file_id")):
            if fid:
                content = await self.deps.client.files.content(fid)
                lines.update(parse_jsonl(content.content))
        status = rec.get("openai_status") or "failed"
        counts = await apply_batch(self.store, bid, status, lines, self.deps, self.requeue)
        self.deps.metrics.batch_savings_usd_total.inc(counts.saved_usd)
        outcomes = list((await self.store.applied(bid)).values())
        done = await self.store.transition(
            bid, "downloading", state="done", finished_at=time.time(),
            succeeded=outcomes.count("succeeded"), failed=outcomes.count("failed"),
            rerouted=outcomes.count("rerouted"),
        )  # fmt: skip
        if done:
            await self.store.finish(bid)
            await self.store.drop_lines(sorted((await self.store.jobs(bid)).keys()))
            if rec.get("file_id"):
                with contextlib.suppress(openai.APIError):
                    await self.deps.client.files.delete(rec["file_id"])
            log.info("batch %s done: %s", bid, {o: outcomes.count(o) for o in set(outcomes)})

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
