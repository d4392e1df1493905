"""Writes monitoring/grafana/dashboards/imgq.json from typed builders (grafana-foundation-sdk).

    .venv/bin/python monitoring/grafana/build_dashboard.py

Run it after editing; tests check the JSON is current, that every query uses defined metrics,
and (tests/monitoring) that every query returns data from a real Prometheus. Each row answers
one question of the README's "Operating imgq" section, in the same order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

OUT = Path(__file__).resolve().parent / "dashboards" / "imgq.json"
DS = DataSourceRef(type_val="prometheus", uid="prometheus")
M = 'model=~"$model"'  # panels with a model label follow the dashboard's model picker
R = "[$__rate_interval]"

Query = tuple[str, str]  # (PromQL, legend)


def quantiles(metric: str, by: str, qs: tuple[float, ...], sel: str = M) -> list[Query]:
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{sel}}}{R})))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in qs
    ]


def _targets(queries: list[Query]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i))
        for i, (expr, legend) in enumerate(queries)
    ]


Panel = TypeVar("Panel", timeseries.Panel, stat.Panel)


def _panel(
    panel: Panel, title: str, queries: list[Query], unit: str, w: int, h: int, about: str
) -> Panel:
    panel = panel.title(title).description(about).datasource(DS).unit(unit).span(w).height(h)
    for t in _targets(queries):
        panel = panel.with_target(t)
    return panel


def chart(
    title: str, queries: list[Query], *, unit: str = "short", w: int = 12, about: str = ""
) -> timeseries.Panel:
    return _panel(timeseries.Panel(), title, queries, unit, w, 8, about)


def single(
    title: str, queries: list[Query], *, unit: str = "short", w: int = 4, about: str = ""
) -> stat.Panel:
    return _panel(stat.Panel(), title, queries, unit, w, 4, about)


def rows() -> list[tuple[str, list[timeseries.Panel | stat.Panel]]]:
    return [
        ("Is it working?", [
            single("Workers up", [('sum(up{job="imgq-worker"})', "workers")]),
            single("API up", [('sum(up{job="imgq-api"})', "api")]),
            single("Redis up", [("max(redis_up)", "redis")]),
            single("Fleet exporter", [("sum(imgq_fleet_exporter)", "holders")],
                   about="Processes exporting queues, dead letters and limiter state (1 is right)."),
            single("Dead letters", [("max(imgq_dead_letters)", "jobs")],
                   about="Jobs that gave up for good; `imgq dlq` lists them."),
            single("Jobs in the broker", [("sum(max by (queue) (imgq_queue_depth))", "waiting")]),
        ]),
        ("SLOs: job success and interactive latency", [
            chart("Job error ratio vs budget (99 % success)", [
                ("imgq:job_errors:ratio_rate1h", "1h"),
                ("imgq:job_errors:ratio_rate6h", "6h"),
                ("imgq:job_errors:ratio_rate3d", "3d"),
                ("vector(0.01)", "budget"),
            ], unit="percentunit",
                about="Failures that are not the caller's, over finished jobs (alerts.yml)."),
            chart("Interactive jobs over 60 s vs budget (99 %)", [
                ("imgq:job_slow:ratio_rate1h", "1h"),
                ("imgq:job_slow:ratio_rate6h", "6h"),
                ("imgq:job_slow:ratio_rate3d", "3d"),
                ("vector(0.01)", "budget"),
            ], unit="percentunit"),
        ]),
        ("Throughput", [
            chart("Jobs per second", [
                (f"sum by (status) (rate(imgq_jobs_total{{{M}}}{R}))", "{{status}}"),
                (f"sum(rate(imgq_jobs_submitted_total{{{M}}}{R}))", "submitted (API)"),
            ], unit="reqps"),
            chart("API calls per second by outcome", [
                (f"sum by (outcome) (rate(imgq_api_requests_total{{{M}}}{R}))", "{{outcome}}"),
            ], unit="reqps"),
        ]),
        ("Latency", [
            chart("Submit to result p50 / p95 / p99", quantiles(
                "imgq_job_duration_seconds", "priority", (0.5, 0.95, 0.99)), unit="s"),
            chart("API call p50 / p95 / p99", quantiles(
                "imgq_api_latency_seconds", "model", (0.5, 0.95, 0.99)), unit="s"),
            chart("Waiting: queue p95 and limiter p95", [
                *quantiles("imgq_queue_wait_seconds", "priority", (0.95,), sel=""),
                *quantiles("imgq_limiter_wait_seconds", "priority", (0.95,)),
            ], unit="s", about="Queue: submit to a worker starting the job. Limiter: capacity."),
        ]),
        ("Rate limits: tokens and requests against the limits", [
            chart("Tokens per minute vs TPM limit", [
                (f'sum by (model) (rate(imgq_tokens_total{{{M},kind=~"input|output"}}{R})) * 60',
                 "used {{model}}"),
                (f"max by (model) (imgq_limiter_tokens_limit{{{M}}})", "limit {{model}}"),
                (f"max by (model) (imgq_limit_tokens_per_minute{{{M}}})",
                 "limit (headers) {{model}}"),
            ], about="The limiter admits a call at estimated input + max output tokens."),
            chart("Limiter token bucket", [
                (f"max by (model) (imgq_limiter_tokens_level{{{M}}})", "level {{model}}"),
                (f"max by (model) (imgq_limiter_tokens_reserved{{{M}}})",
                 "reserved (in flight) {{model}}"),
                (f"min by (model) (imgq_ratelimit_remaining_tokens{{{M}}})",
                 "remaining (headers) {{model}}"),
            ], about="Refills at TPM/60 per second; below 0 after the API charged more than reserved."),
            chart("Requests per minute vs RPM limit", [
                (f"sum by (model) (rate(imgq_api_requests_total{{{M}}}{R})) * 60",
                 "used {{model}}"),
                (f"max by (model) (imgq_limiter_requests_limit{{{M}}})", "limit {{model}}"),
                (f"max by (model) (imgq_limiter_requests_level{{{M}}})",
                 "bucket level {{model}}"),
                (f"max by (model) (imgq_limit_requests_per_minute{{{M}}})",
                 "limit (headers) {{model}}"),
                (f"min by (model) (imgq_ratelimit_remaining_requests{{{M}}})",
                 "remaining (headers) {{model}}"),
            ]),
            chart("Calls waiting for capacity", [
                (f"max by (model, priority) (imgq_limiter_waiters{{{M}}})",
                 "{{priority}} {{model}}"),
                (f"max by (model) (imgq_limiter_in_flight{{{M}}})", "granted {{model}}"),
            ]),
            chart("429s per second", [
                (f"sum by (model) (rate(imgq_rate_limited_total{{{M}}}{R}))", "{{model}}"),
            ], unit="reqps", w=12),
            chart("Limiter cooldown after a 429", [
                (f"max by (model) (imgq_limiter_cooldown_seconds{{{M}}})", "fleet {{model}}"),
                (f"max by (model) (imgq_cooldown_seconds{{{M}}})", "seen by a worker {{model}}"),
            ], unit="s", w=12),
        ]),
        ("Queues and work in progress", [
            chart("Queue depth", [
                ("max by (queue) (imgq_queue_depth)", "{{queue}}"),
                ("max(imgq_queue_unacked)", "delivered, not acked"),
            ], w=8),
            chart("Age of the next job in line", [
                ("max by (queue) (imgq_queue_oldest_age_seconds)", "{{queue}}"),
            ], unit="s", w=8),
            chart("API calls in flight vs concurrency limit", [
                (f"sum by (model) (imgq_in_flight_requests{{{M}}})", "in flight {{model}}"),
                (f"sum by (model) (imgq_concurrency_limit{{{M}}})", "limit {{model}}"),
            ], w=8),
        ]),
        ("Failures, retries, dedup, dead letters", [
            chart("Failed jobs and retries by code", [
                (f"sum by (code) (rate(imgq_job_failures_total{{{M}}}{R}))", "failed {{code}}"),
                (f"sum by (code) (rate(imgq_retries_total{{{M}}}{R}))", "retry {{code}}"),
            ], unit="reqps"),
            chart("Dedup hits and dead letters", [
                (f"sum by (kind) (rate(imgq_dedup_hits_total{R}))", "dedup {{kind}} /s"),
                ("max(imgq_dead_letters)", "dead letters"),
            ]),
        ]),
        ("Cost", [
            chart("Cost (USD per hour)", [
                (f"sum by (model) (rate(imgq_cost_usd_total{{{M}}}{R})) * 3600", "{{model}}"),
            ], unit="currencyUSD", w=16),
            single("Cost in range (USD)", [
                (f"sum(increase(imgq_cost_usd_total{{{M}}}[$__range]))", "total"),
            ], unit="currencyUSD", w=8),
            chart("Cost per tenant: billed in the last hour (USD)", [
                ('sum by (tenant) (delta(imgq_tenant_spend_usd{period="billed"}[1h]))',
                 "{{tenant}}"),
            ], unit="currencyUSD",
                about="From the API's tenant ledger (API keys); a gauge, hence delta()."),
            chart("Cost per tenant: today and this month (USD)", [
                ('max by (tenant) (imgq_tenant_spend_usd{period="day"})', "today {{tenant}}"),
                ('max by (tenant) (imgq_tenant_spend_usd{period="month"})', "month {{tenant}}"),
            ], unit="currencyUSD", about="Reservations of calls in flight included."),
        ]),
        ("Batch API route (50 % cheaper, answers within 24 h)", [
            chart("Batches by status", [
                ("max by (status) (imgq_batches)", "{{status}}"),
            ], w=8),
            chart("Jobs waiting for an answer by route", [
                ("max by (route) (imgq_jobs_waiting)", "{{route}}"),
            ], w=8),
            chart("Batch savings (USD per hour)", [
                (f"sum(rate(imgq_batch_savings_usd_total{R})) * 3600", "saved"),
            ], unit="currencyUSD", w=8),
        ]),
        ("Resources and images", [
            chart("Worker memory (RSS)", [
                ('process_resident_memory_bytes{job=~"imgq-worker|imgq-api"}', "{{instance}}"),
            ], unit="bytes", w=8),
            chart("CPU per process", [
                (f'rate(process_cpu_seconds_total{{job=~"imgq-worker|imgq-api"}}{R})',
                 "{{instance}}"),
            ], unit="percentunit", w=8),
            chart("Image preparation p95 and bytes", [
                ("histogram_quantile(0.95, sum by (le) "
                 f"(rate(imgq_image_prepare_seconds_bucket{R})))", "prepare p95 (s)"),
                ('1 - sum(rate(imgq_image_bytes_total{stage="sent"}[$__range]))'
                 ' / sum(rate(imgq_image_bytes_total{stage="original"}[$__range]))',
                 "bytes saved (share)"),
            ], w=8),
        ]),
    ]  # fmt: skip


def loop_lag_panels() -> list[timeseries.Panel | stat.Panel]:
    """The worker event loop's lag, once shared/metrics.py defines it (issue 9 adds it)."""
    from shared.metrics import Metrics

    names = {fam.name for fam in Metrics().registry.collect()}
    if "imgq_event_loop_lag_seconds" not in names:
        return []
    return [
        chart("Worker event loop lag", [
            ('histogram_quantile(0.99, sum by (instance, le) '
             '(rate(imgq_event_loop_lag_seconds_bucket{job="imgq-worker"}[5m])))', "p99 {{instance}}"),
        ], unit="s", w=24, about="Time a ready callback waits for the loop: > 0.1 s slows every call."),
    ]  # fmt: skip


def dashboard() -> gd.Dashboard:
    model_picker = (
        gd.QueryVariable("model")
        .label("Model")
        .datasource(DS)
        .query("label_values(imgq_api_requests_total, model)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .multi(True)
        .all_value(".*")
    )
    board = (
        gd.Dashboard("imgq overview")
        .uid("imgq-overview")
        .tags(["imgq"])
        .timezone("browser")
        .editable()
        .refresh("30s")
        .time("now-3h", "now")
        .with_variable(model_picker)
    )
    board_rows = rows()
    board_rows[-1][1].extend(loop_lag_panels())
    for title, panels in board_rows:
        board = board.with_row(gd.Row(title))
        for p in panels:
            board = board.with_panel(p)
    return board


def render() -> str:
    built = dashboard().build()
    doc = json.loads(json.dumps(built, cls=JSONEncoder))
    for i, panel in enumerate(doc["panels"], start=1):  # stable ids, in reading order
        panel["id"] = i
    return json.dumps(doc, indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
