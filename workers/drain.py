"""Drain: a stopping worker hands back the jobs that are only waiting for limiter capacity.

Celery's warm shutdown waits for every running task; a task waiting for TPM capacity could hold
the stop for ``IMGQ_CAPACITY_WAIT_SECONDS``. On shutdown those waits are cancelled and turned into
CapacityWaitTimeoutError, so the task re-queues its job at once. Calls already sent finish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from shared.errors import CapacityWaitTimeoutError


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self._waiting: set[asyncio.Task[Any]] = set()

    @contextlib.asynccontextmanager
    async def capacity_wait(self) -> AsyncIterator[None]:
        """Wrap a wait for capacity: it ends with CapacityWaitTimeoutError when draining starts."""
        if self.draining:
            raise CapacityWaitTimeoutError("the worker is stopping: the job goes back to the queue")
        task = asyncio.current_task()
        if task is not None:
            self._waiting.add(task)
        try:
            yield
        except asyncio.CancelledError:
            # Ours (draining) rather than the caller's: uncancel and hand the job back.
            if self.draining and task is not None and task.uncancel() == 0:
                raise CapacityWaitTimeoutError(
                    "the worker is stopping: the job goes back to the queue"
                ) from None
            raise
        finally:
            if task is not None:
                self._waiting.discard(task)

    def start(self) -> None:
        """Begin draining (call on the event loop)."""
        self.draining = True
        for task in list(self._waiting):
            task.cancel()
