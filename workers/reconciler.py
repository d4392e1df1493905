"""The reconciler: jobs whose record says queued/running but that nothing is working on.

A message can be lost where no lease protects it (an ack racing a restore after a pause, a
broker that lost its last second of writes). The job's record stays open in
``imgq:jobs:open`` (shared/jobstate.py), scored by its last sign of life: submit, lease taken,
lease extended. Every ``IMGQ_RECONCILE_INTERVAL_SECONDS`` one worker of the fleet (elected
through a Redis key with a TTL; every worker runs the loop, so a dead leader is replaced
within a few intervals) looks at jobs silent for ``IMGQ_RECONCILE_STALE_SECONDS``:

- a lease is held: alive, skipped;
- finished: dropped from the index;
- past its deadline (``expires_at``): fails ``expired`` and is dead-lettered;
- otherwise: enqueued again from its stored spec (at most once per stale period). A duplicate
  of a message that still exists is harmless: its delivery finds the lease held or the job done.

A job in a backlog deeper than the stale bound is re-enqueued once per period (an extra message
that costs a lease check, never a call): set the bound above the deepest backlog you expect.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from shared import dlq, errors
from shared.budget import settle_job
from shared.jobs import ErrorInfo, Result
from shared.jobstate import OPEN_JOBS, load_spec, send_job, state_key
from shared.loop_thread import cancel_task
from shared.lua import load_lua
from workers import webhooks
from workers.commit import write_final
from workers.deps import WorkerDeps
from workers.locks import LOCK_PREFIX, Lease

log = logging.getLogger(__name__)
LEADER_KEY = "imgq:reconciler:leader"
BATCH = 500


class Reconciler:
    def __init__(self, deps: WorkerDeps, celery_app: Any, *, now: Callable[[], float] = time.time):
        self._deps = deps
        self._app = celery_app
        self._owner = uuid.uuid4().hex
        s = deps.settings
        self._interval = s.reconcile_interval_seconds
        self._stale_ms = int(s.reconcile_stale_seconds * 1000)
        self._hold = deps.redis.register_script(load_lua("workers", "leader_hold.lua"))
        self._scan = deps.redis.register_script(load_lua("workers", "reconcile_scan.lua"))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="imgq-reconcile")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None

    async def is_leader(self) -> bool:
        ttl_ms = int(self._interval * 3000)
        return bool(await self._hold(keys=[LEADER_KEY], args=[self._owner, ttl_ms]))

    async def _run(self) -> None:
        while True:
            try:
                if await self.is_leader():
                    await self.reconcile_once()
            except (RedisError, OSError, errors.StorageUnavailableError) as exc:
                log.warning("reconciler: Redis unavailable (%s)", exc)
            except Exception:  # never let the loop die
                log.exception("reconciler: tick failed")
            await asyncio.sleep(self._interval)

    async def reconcile_once(self) -> Counter[str]:
        """One pass over the silent jobs; returns how many got each verdict."""
        r = self._deps.redis
        seconds, micros = await r.time()
        horizon = int(seconds) * 1000 + int(micros) // 1000 - self._stale_ms
        ids = await r.zrangebyscore(OPEN_JOBS, "-inf", horizon, start=0, num=BATCH)
        verdicts: Counter[str] = Counter()
        for raw in ids:
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            keys = [LOCK_PREFIX + job_id, state_key(job_id), OPEN_JOBS]
            verdict = await self._scan(keys=keys, args=[job_id, self._stale_ms])
            verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
            if verdict == "requeue":
                verdict = await self._requeue(job_id)
            elif verdict == "expired":
                verdict = await self._expire(job_id)
            verdicts[verdict] += 1
        if verdicts["requeue"] or verdicts["expired"]:
            log.warning("reconciler: %s", dict(verdicts))
        return verdicts

    async def _requeue(self, job_id: str) -> str:
        job = await load_spec(self._deps.redis, job_id)
        if job is None:
            return "gone"
        await asyncio.to_thread(send_job, self._app, job)
        log.warning("reconciler: job %s had no live message or lease: enqueued again", job_id)
        return "requeue"

    async def _expire(self, job_id: str) -> str:
        deps = self._deps
        lease = await deps.locks.acquire(job_id)
        if not isinstance(lease, Lease):
            return "alive" if lease == "held" else "done"
        try:
            result = await deps.results.get(job_id) or Result(job_id=job_id)
            if result.done:
                return "done"
            exc = errors.JobExpiredError("the job was not finished by its deadline (expires_at)")
            result.status = "failed"
            result.error = ErrorInfo(code=exc.code, message=exc.message, retryable=False)
            result.timings.finished_at = time.time()
            await write_final(deps, lease, result)
            await dlq.add(deps.redis, job_id)
            await deps.events.publish(job_id, "failed")
            if (spec := await load_spec(deps.redis, job_id)) is not None:  # issue 11
                await settle_job(deps.redis, spec, result)  # its budget estimate back
                await webhooks.schedule(deps, spec, result)
            return "expired"
        finally:
            await deps.locks.release(lease)
