"""Start a worker process: Celery's threads pool, one event loop, metrics, clean shutdown."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from celery import signals
from celery.worker import state as worker_state

from shared.broker import QUEUES, create_celery
from shared.fleet_metrics import FleetCollector
from shared.metrics import Metrics, start_metrics_server
from shared.settings import Settings
from workers.eviction import check_redis_eviction
from workers.runtime import WorkerRuntime
from workers.tasks import register_tasks

log = logging.getLogger(__name__)


def held_delivery_tags() -> Iterator[str]:
    """Delivery tags of every message this process holds (reserved or running)."""
    for _ in range(3):  # the set may change while we copy it; try again
        try:
            requests = list(worker_state.reserved_requests)
            break
        except RuntimeError:
            continue
    else:
        return
    for req in requests:
        tag = getattr(getattr(req, "message", None), "delivery_tag", None)
        if tag is not None:
            yield str(tag)


def quiet_http_loggers() -> None:
    # httpx2 logs one INFO line per request; aiohttp access logs likewise.
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_worker(
    settings: Settings,
    *,
    concurrency: int | None = None,
    queues: tuple[str, ...] = QUEUES,
    loglevel: str | None = None,
    hostname: str | None = None,
) -> None:
    """Run a Celery worker in this process until it is told to stop (SIGTERM: warm shutdown)."""
    quiet_http_loggers()
    redis_url = settings.require_redis_url()  # the CLI starts the embedded Redis, never us
    broker_url = settings.effective_broker_url or redis_url
    concurrency = concurrency or settings.worker_concurrency
    settings = settings.model_copy(update={"worker_concurrency": concurrency})
    check_redis_eviction(redis_url, allow=settings.allow_evicting_redis)  # issue 9
    app = create_celery(settings, broker_url)
    metrics = Metrics()
    runtime = WorkerRuntime(
        settings,
        redis_url=redis_url,
        broker_url=broker_url,
        metrics=metrics,
        delivery_tags=held_delivery_tags,
        celery_app=app,
    )
    register_tasks(app, lambda: runtime)
    fleet = FleetCollector.from_settings(settings, redis_url, broker_url, metrics.guard)

    def on_ready(**_: Any) -> None:
        if settings.metrics_port:
            # Queue depth, dead letters, limiter buckets: exported by one elected worker.
            metrics.registry.register(fleet)
            start_metrics_server(settings.metrics_port, metrics.registry, port_span=16)
        runtime.deps()  # start the loop, clients and lease heartbeat now, not on the first job

    def on_shutting_down(**_: Any) -> None:
        runtime.begin_drain()

    def on_shutdown(**_: Any) -> None:
        fleet.close()  # hand the fleet-exporter lease over at once
        runtime.shutdown()

    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutting_down.connect(on_shutting_down, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        f"--queues={','.join(queues)}",
        f"--loglevel={loglevel or settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)
