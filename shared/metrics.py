"""Every Prometheus metric of imgq, on an explicit registry (nothing registered at import).

One `Metrics` per process; pass it (or its `.registry`) to whatever records or serves metrics.
Names are in base units (`_seconds`, `_bytes`, `_total`) and all start with ``imgq_``. Labels stay
low-cardinality: `model`, `code` and `outcome` pass through a per-instance guard that folds values
past a cap into ``"other"`` (a job's `model` is caller-supplied, so it must never grow a series per
typo); job ids, keys and URLs are never labels.

Each registry also carries prometheus_client's process collector (``process_resident_memory_bytes``,
CPU seconds, open fds) for the process serving it.

>>> m = Metrics()
>>> m.jobs_total.labels(model="gpt-4.1-mini", api="chat", status="succeeded").inc()
>>> m.registry.get_sample_value(
...     "imgq_jobs_total", {"model": "gpt-4.1-mini", "api": "chat", "status": "succeeded"})
1.0
>>> m.registry.get_sample_value("process_resident_memory_bytes") > 0
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    ProcessCollector,
    start_http_server,
)

from shared.catalogue import canonical_model
from shared.metric_labels import _M, DEFAULT_CAPS, OTHER, LabelGuard, _Counter, _Gauge, _Histogram

__all__ = [
    "API_LATENCY_BUCKETS",
    "JOB_DURATION_BUCKETS",
    "LIMITER_WAIT_BUCKETS",
    "OTHER",
    "QUEUE_WAIT_BUCKETS",
    "LabelGuard",
    "Metrics",
    "MetricsServer",
    "start_metrics_server",
]

# The API may take up to the client timeout (120 s by default); finer steps where most calls land.
API_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120)
JOB_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LIMITER_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
IMAGE_PREPARE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """All imgq metrics. `Metrics()` makes its own registry; two instances never clash.

    Labels: model, api (chat|responses), status (succeeded|failed), code (an `ImgqError.code`),
    outcome (ok | an HTTP status | an error code), priority (interactive|bulk), kind, stage.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        label_caps: Mapping[str, int] = DEFAULT_CAPS,
        model_label: Callable[[str], str] | None = canonical_model,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # The `model` label is the catalogue's canonical name ("unknown" for uncatalogued names).
        normalize = {"model": model_label} if model_label is not None else None
        self.guard = LabelGuard(label_caps, normalize=normalize)
        reg = self.registry

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> _Counter:
            return self._own(_Counter(f"imgq_{name}", doc, list(labels), registry=reg))

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> _Gauge:
            return self._own(_Gauge(f"imgq_{name}", doc, list(labels), registry=reg))

        def histogram(
            name: str, doc: str, labels: Iterable[str], buckets: tuple[float, ...]
        ) -> _Histogram:
            h = _Histogram(f"imgq_{name}", doc, list(labels), registry=reg, buckets=buckets)
            return self._own(h)

        # -- jobs -----------------------------------------------------------------------------
        self.jobs_submitted_total = counter(
            "jobs_submitted_total", "Jobs accepted and enqueued.", ("model", "priority")
        )
        self.jobs_total = counter(
            "jobs_total", "Jobs finished, by final status.", ("model", "api", "status")
        )
        self.job_failures_total = counter(
            "job_failures_total", "Jobs failed for good, by error code.", ("model", "code")
        )
        self.job_duration_seconds = histogram(
            "job_duration_seconds",
            "Submit to stored result.",
            ("model", "priority"),
            JOB_DURATION_BUCKETS,
        )
        self.queue_wait_seconds = histogram(
            "queue_wait_seconds", "Submit to a worker starting the job.", ("priority",),
            QUEUE_WAIT_BUCKETS,
        )  # fmt: skip
        self.retries_total = counter(
            "retries_total", "Attempts retried, by the error that caused it.", ("model", "code")
        )
        self.dedup_hits_total = counter(
            "dedup_hits_total", "Jobs answered by deduplication.", ("kind",)
        )  # kind: finished (an earlier result) | in_flight (joined a running job)

        # -- API calls ------------------------------------------------------------------------
        self.api_requests_total = counter(
            "api_requests_total", "API calls by outcome.", ("model", "api", "outcome")
        )
        self.api_latency_seconds = histogram(
            "api_latency_seconds", "One API call, request to parsed answer.", ("model", "api"),
            API_LATENCY_BUCKETS,
        )  # fmt: skip
        self.rate_limited_total = counter("rate_limited_total", "429 answers seen.", ("model",))
        self.in_flight_requests = gauge("in_flight_requests", "API calls in flight.", ("model",))
        self.tokens_total = counter(
            "tokens_total", "Tokens by kind: input|output|image|estimated_input.", ("model", "kind")
        )
        self.cost_usd_total = counter("cost_usd_total", "Estimated spend in USD.", ("model",))

        # -- limiter --------------------------------------------------------------------------
        self.limiter_wait_seconds = histogram(
            "limiter_wait_seconds", "Time waiting for limiter capacity.", ("model", "priority"),
            LIMITER_WAIT_BUCKETS,
        )  # fmt: skip
        self.concurrency_limit = gauge(
            "concurrency_limit", "Current adaptive concurrency limit.", ("model",)
        )
        self.limit_tokens_per_minute = gauge(
            "limit_tokens_per_minute", "TPM the limiter enforces fleet-wide.", ("model",)
        )
        self.limit_requests_per_minute = gauge(
            "limit_requests_per_minute", "RPM the limiter enforces fleet-wide.", ("model",)
        )
        self.ratelimit_remaining_tokens = gauge(
            "ratelimit_remaining_tokens", "Last x-ratelimit-remaining-tokens.", ("model",)
        )
        self.ratelimit_remaining_requests = gauge(
            "ratelimit_remaining_requests", "Last x-ratelimit-remaining-requests.", ("model",)
        )
        self.cooldown_seconds = gauge(
            "cooldown_seconds", "Seconds left of the limiter's 429 cooldown (0: none).", ("model",)
        )

        # -- images ---------------------------------------------------------------------------
        self.image_bytes_total = counter(
            "image_bytes_total", "Image bytes: stage original (as given) | sent (after prep).",
            ("stage",),
        )  # fmt: skip
        self.image_prepare_seconds = histogram(
            "image_prepare_seconds", "Decode, resize and encode of one image.", (),
            IMAGE_PREPARE_BUCKETS,
        )  # fmt: skip
        # -- batch route (issue 14; set by the elected batcher) --------------------------------
        self.batches = gauge(
            "batches", "Unfinished Batch API batches by status (imgq state before creation).",
            ("status",),
        )  # fmt: skip
        self.jobs_waiting = gauge(
            "jobs_waiting", "Jobs waiting for an answer, by route.", ("route",)
        )
        self.batch_savings_usd_total = counter(
            "batch_savings_usd_total", "USD saved by the Batch API against the online price."
        )
        # -- worker event loop (issue 9; fed by shared/loop_lag.py) ----------------------------
        self.event_loop_lag_seconds = histogram(
            "event_loop_lag_seconds", "How late the worker's event loop wakes a timer "
            "(CPU work on the loop shows here).", (), LOOP_LAG_BUCKETS,
        )  # fmt: skip
        # RSS, CPU seconds, open fds of this process (Linux /proc; nothing elsewhere).
        ProcessCollector(registry=reg)
        # Series of fixed label sets exist from the start at 0, so rate() sees their first
        # increment (a series born at 1 looks like no change) and panels show 0, not "no data".
        for priority in ("interactive", "bulk"):
            self.queue_wait_seconds.labels(priority=priority)
        for kind in ("finished", "in_flight"):
            self.dedup_hits_total.labels(kind=kind)
        for stage in ("original", "sent"):
            self.image_bytes_total.labels(stage=stage)

    def _own(self, metric: _M) -> _M:
        metric._imgq_guard = self.guard
        return metric

    # -- helpers for gauges fed from headers --------------------------------------------------
    def set_cooldown_until(self, model: str, deadline: float) -> None:
        """Cooldown ends at `deadline` (time.time()); the gauge counts down to 0 on its own."""
        self.cooldown_seconds.labels(model=model).set_function(
            lambda: max(0.0, deadline - time.time())
        )

    def set_ratelimit_remaining(
        self, model: str, *, tokens: float | None = None, requests: float | None = None
    ) -> None:
        """From x-ratelimit-remaining-* headers (absent on OpenAI-compatible servers: skip)."""
        if tokens is not None:
            self.ratelimit_remaining_tokens.labels(model=model).set(tokens)
        if requests is not None:
            self.ratelimit_remaining_requests.labels(model=model).set(requests)


@dataclass
class MetricsServer:
    """A running /metrics endpoint; `close()` stops it (tests, shutdown)."""

    port: int
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    port: int, registry: CollectorRegistry, addr: str = "0.0.0.0", *, port_span: int = 1
) -> MetricsServer:
    """Serve `registry` on http://addr:port/metrics in a daemon thread.

    With `port_span` > 1 the first free port of [port, port + port_span) is taken, so several
    processes on one host can share one `IMGQ_METRICS_PORT` (see the README, "Operating imgq").
    Port 0 picks any free port; the bound one is `.port`.
    """
    last: OSError | None = None
    for candidate in range(port, port + max(1, port_span)):
        try:
            server, thread = start_http_server(candidate, addr, registry=registry)
        except OSError as exc:  # address in use: try the next one
            last = exc
            continue
        return MetricsServer(port=server.server_port, _server=server, _thread=thread)
    raise OSError(f"no free metrics port in [{port}, {port + port_span})") from last
