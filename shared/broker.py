"""The Celery wiring producers and workers share: task name, queues, the app factory, leases.

Queues ``interactive`` and ``bulk``; with a Redis broker the worker polls them in that order
(``queue_order_strategy="priority"``), so interactive jobs are always taken first. JSON only,
late acks, one prefetch per thread, short leases kept alive by the workers' heartbeat.

>>> QUEUES
('interactive', 'bulk')
>>> celery_config(Settings(), "redis://127.0.0.1:6399/0")["broker_transport_options"]["visibility_timeout"]
20
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

TASK_NAME = "imgq.process_job"
QUEUES = ("interactive", "bulk")
LEASE_SECONDS = 20  # broker visibility timeout and job-lock TTL
HEARTBEAT_SECONDS = 4  # well under LEASE_SECONDS: several missed beats before a lease lapses


def celery_config(settings: Settings, broker_url: str) -> dict[str, Any]:
    """The Celery settings of both sides (no connection is made)."""
    from kombu.entity import Queue

    return {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,  # results are ours (Redis/S3), with status and usage
        "task_ignore_result": True,
        "task_acks_late": True,  # a job is acked only once its result is stored
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # prefetch = concurrency: backlog stays in the broker
        "task_queues": [Queue(q, routing_key=q) for q in QUEUES],  # type: ignore[no-untyped-call]
        "task_default_queue": "interactive",
        "task_create_missing_queues": False,
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_transport_options": {
            # Short lease, kept alive by the workers' heartbeat (workers/locks.py): a dead worker's
            # jobs are back in about LEASE_SECONDS + the restore interval; a live worker may hold
            # a job for hours.
            "visibility_timeout": LEASE_SECONDS,
            "unacked_restore_interval": HEARTBEAT_SECONDS / 2,
            "unacked_restore_throttle": 1,
            # kombu's restore scan takes a fleet-wide mutex for 300 s by default: a worker paused
            # (SIGSTOP, VM pause) or killed while holding it stops every restore for 5 minutes.
            # The scan takes milliseconds; a duplicate restore is harmless (leases, issue 9).
            "unacked_mutex_expire": LEASE_SECONDS // 2,
            "queue_order_strategy": "priority",
        },
        "include": [],
    }


def create_celery(settings: Settings, broker_url: str) -> Celery:
    """A configured app (no connection is made until it is used)."""
    from celery import Celery

    app = Celery("imgq", set_as_current=False)
    app.conf.update(celery_config(settings, broker_url))
    return app
