"""The Batch API steps of one imgq batch, each run by the leader's batcher (workers/batcher.py).

``upload`` (find our file, else upload it), ``create`` (wait under the learned enqueued-token
limit, find our batch, else create it), ``poll`` (learn the limit from a failure, send the batch
back or re-batch it smaller) and ``download`` (apply the output and error files). Each looks
before it acts and moves the batch record by compare-and-set, so a leader that dies anywhere is
resumed by the next one without uploading or creating anything twice.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from typing import Any

import openai

from shared.batch_store import BatchStore
from workers.batch_leader import Leadership
from workers.batch_results import Requeue, apply_batch, parse_jsonl
from workers.deps import WorkerDeps

log = logging.getLogger("workers.batcher")  # one logger for the batcher's lines
TERMINAL = ("completed", "failed", "expired", "cancelled")
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


class BatchSteps:
    """The API steps; ``advance`` in workers/batcher.py picks one by the batch's state."""

    def __init__(
        self, deps: WorkerDeps, store: BatchStore, leadership: Leadership, requeue: Requeue
    ) -> None:
        self.deps = deps
        self.store = store
        self.leadership = leadership
        self.requeue = requeue

    async def _still_owner(self, bid: str, state: str) -> bool:
        """Still the leader, and the batch still in ``state``: checked just before the call."""
        rec = await self.store.record(bid)
        return rec is not None and rec["state"] == state and await self.leadership.is_mine()

    async def upload(self, bid: str, rec: dict[str, str]) -> None:
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

    async def create(self, bid: str, rec: dict[str, str]) -> None:
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

    async def poll(self, bid: str, rec: dict[str, str]) -> None:
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

    async def download(self, bid: str, rec: dict[str, str]) -> None:
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
