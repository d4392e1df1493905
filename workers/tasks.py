"""Thin Celery tasks: decode the JSON payload, hand it to the runtime's event loop, done."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from shared.errors import CapacityWaitTimeoutError
from workers.celery_app import QUEUES, TASK_NAME
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def register_tasks(app: Celery, get_runtime: Callable[[], WorkerRuntime]) -> Task:  # type: ignore[type-arg]
    """Register the job task on ``app`` (the task list is explicit: this is all of it)."""

    @app.task(name=TASK_NAME, bind=True, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def process_job(self: Task, payload: dict[str, Any]) -> None:  # type: ignore[type-arg]
        try:
            get_runtime().run_job(payload)
        except CapacityWaitTimeoutError:
            # No capacity for a while: hand the job back to the broker, where backlog belongs,
            # rather than hold it (and a thread) here. Not an attempt; the job id stays the same.
            queue = payload.get("priority") if payload.get("priority") in QUEUES else QUEUES[0]
            try:
                self.app.send_task(TASK_NAME, args=[payload], queue=queue)
            except Exception as exc:
                # Could not publish: give the message itself back rather than ack and lose it.
                raise Reject(f"could not re-queue: {exc}", requeue=True) from exc
            log.info("job %s: no capacity yet, back to the %s queue", payload.get("job_id"), queue)

    return process_job  # type: ignore[no-any-return]
