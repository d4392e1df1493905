"""Thin Celery tasks: decode the JSON payload, hand it to the runtime's event loop, done.

No path acks a message whose job did not end: whatever is not a terminal result goes back to
the broker. Capacity hand-backs are re-published (not counted against the job); a lost lease
or a failed delivery is rejected with ``requeue=True`` after a backoff that grows with the
job's delivery count, so a job that crashes every time never spins; its state counts the
deliveries and, after ``IMGQ_MAX_DELIVERIES``, it fails as ``poison_job`` (workers/processor.py).

Why requeue rather than ack when a lease was lost: kombu keeps a message's delivery tag when
it restores it, so the stale delivery's ack would delete the *new* delivery's unacked entry;
a requeued duplicate is harmless (its delivery finds the lease held or the job finished).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from shared.broker import QUEUES, TASK_NAME
from shared.errors import CapacityWaitTimeoutError
from workers.locks import LeaseLostError
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)
MAX_REDELIVERY_BACKOFF_SECONDS = 60.0


def redelivery_backoff(deliveries: int, base: float) -> float:
    """Wait before handing a failed delivery back: base, 2 x base, 4 x base ... (max 60 s).

    >>> [redelivery_backoff(n, 1.0) for n in (1, 2, 3, 8)]
    [1.0, 2.0, 4.0, 60.0]
    """
    return float(min(base * 2 ** max(0, deliveries - 1), MAX_REDELIVERY_BACKOFF_SECONDS))


def register_tasks(app: Celery, get_runtime: Callable[[], WorkerRuntime]) -> Task:  # type: ignore[type-arg]
    """Register the job task on ``app`` (the task list is explicit: this is all of it)."""

    @app.task(name=TASK_NAME, bind=True, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def process_job(self: Task, payload: dict[str, Any]) -> None:  # type: ignore[type-arg]
        runtime = get_runtime()
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        try:
            runtime.run_job(payload)
        except CapacityWaitTimeoutError:
            # No capacity for a while: hand the job back to the broker, where backlog belongs,
            # rather than hold it (and a thread) here. Not an attempt; the job id stays the same.
            queue = payload.get("priority") if payload.get("priority") in QUEUES else QUEUES[0]
            try:
                self.app.send_task(TASK_NAME, args=[payload], queue=queue)
            except Exception as exc:
                # Could not publish: give the message itself back rather than ack and lose it.
                raise Reject(f"could not re-queue: {exc}", requeue=True) from exc
            log.info("job %s: no capacity yet, back to the %s queue", job_id, queue)
        except LeaseLostError as exc:
            log.warning("job %s: %s; message handed back", job_id, exc)
            raise Reject(str(exc), requeue=True) from exc
        except Exception as exc:
            deliveries = int(getattr(exc, "deliveries", 1) or 1)
            delay = redelivery_backoff(deliveries, runtime.settings.redelivery_backoff_seconds)
            log.warning(
                "job %s: delivery %d failed (%s: %s); back to the broker in %.0f s",
                job_id, deliveries, type(exc).__name__, exc, delay,
            )  # fmt: skip
            time.sleep(delay)  # this thread only; the heartbeat keeps the message's lease
            raise Reject(f"{type(exc).__name__}: {exc}", requeue=True) from exc

    return process_job  # type: ignore[no-any-return]
