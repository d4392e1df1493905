"""Writes monitoring/grafana/dashboards/imgq.json (run after editing; a test checks it is current).

.venv/bin/python monitoring/grafana/build_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "imgq.json"
DS = {"type": "prometheus", "uid": "prometheus"}
M = 'model=~"$model"'  # every panel follows the dashboard's model picker


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


def panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    w: int = 12,
    h: int = 8,
    description: str = "",
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(targets)],
    }


def quantiles(metric: str, by: str, qs: tuple[float, ...], sel: str = M) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) "
            f"(rate({metric}_bucket{{{sel}}}[$__rate_interval])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in qs
    ]


def panels() -> list[dict[str, Any]]:
    r = "[$__rate_interval]"
    return [
        panel("Jobs finished per second", [
            (f"sum by (status) (rate(imgq_jobs_total{{{M}}}{r}))", "{{status}}"),
            (f"sum(rate(imgq_jobs_submitted_total{{{M}}}{r}))", "submitted"),
        ], unit="reqps", w=8),
        panel("API calls per second by outcome", [
            (f"sum by (outcome) (rate(imgq_api_requests_total{{{M}}}{r}))", "{{outcome}}"),
        ], unit="reqps", w=8),
        panel("Workers up", [
            ('sum(up{job="imgq-worker"})', "workers"),
            ('sum(up{job="imgq-api"})', "api"),
            ("sum(redis_up)", "redis"),
        ], kind="stat", w=8),
        panel("API latency p50 / p95 / p99", quantiles(
            "imgq_api_latency_seconds", "model", (0.5, 0.95, 0.99)
        ), unit="s"),
        panel("Job duration (submit to result) p50 / p95 / p99", quantiles(
            "imgq_job_duration_seconds", "priority", (0.5, 0.95, 0.99)
        ), unit="s"),
        panel("Tokens per minute vs TPM limit", [
            (f"sum by (model) (rate(imgq_tokens_total{{{M},kind=~\"input|output\"}}{r})) * 60",
             "used {{model}}"),
            (f"sum by (model) (rate(imgq_tokens_total{{{M},kind=\"estimated_input\"}}{r})) * 60",
             "estimated input {{model}}"),
            (f"max by (model) (imgq_limit_tokens_per_minute{{{M}}})", "limit {{model}}"),
            (f"min by (model) (imgq_ratelimit_remaining_tokens{{{M}}})",
             "remaining (headers) {{model}}"),
        ], description="The limiter admits a call at estimated input + max output tokens."),
        panel("Requests per minute vs RPM limit", [
            (f"sum by (model) (rate(imgq_api_requests_total{{{M}}}{r})) * 60", "used {{model}}"),
            (f"max by (model) (imgq_limit_requests_per_minute{{{M}}})", "limit {{model}}"),
            (f"min by (model) (imgq_ratelimit_remaining_requests{{{M}}})",
             "remaining (headers) {{model}}"),
        ]),
        panel("429 rate limited per second", [
            (f"sum by (model) (rate(imgq_rate_limited_total{{{M}}}{r}))", "{{model}}"),
        ], unit="reqps", w=8),
        panel("In flight vs concurrency limit", [
            (f"sum by (model) (imgq_in_flight_requests{{{M}}})", "in flight {{model}}"),
            (f"sum by (model) (imgq_concurrency_limit{{{M}}})", "limit {{model}}"),
        ], w=8),
        panel("Limiter cooldown", [
            (f"max by (model) (imgq_cooldown_seconds{{{M}}})", "{{model}}"),
        ], unit="s", w=8),
        panel("Waiting: queue p95 and limiter p95", [
            *quantiles("imgq_queue_wait_seconds", "priority", (0.95,), sel=""),
            *quantiles("imgq_limiter_wait_seconds", "priority", (0.95,)),
        ], unit="s"),
        panel("Failures by code", [
            (f"sum by (code) (rate(imgq_job_failures_total{{{M}}}{r}))", "{{code}}"),
            (f"sum by (code) (rate(imgq_retries_total{{{M}}}{r}))", "retry {{code}}"),
        ], unit="reqps"),
        panel("Cost (USD per hour)", [
            (f"sum by (model) (rate(imgq_cost_usd_total{{{M}}}{r})) * 3600", "{{model}}"),
        ], unit="currencyUSD", w=8),
        panel("Cost in range (USD)", [
            (f"sum(increase(imgq_cost_usd_total{{{M}}}[$__range]))", "total"),
        ], unit="currencyUSD", kind="stat", w=4),
        panel("Image bytes saved", [
            ("1 - sum(rate(imgq_image_bytes_total{stage=\"sent\"}[$__range]))"
             " / sum(rate(imgq_image_bytes_total{stage=\"original\"}[$__range]))", "saved"),
        ], unit="percentunit", kind="stat", w=4),
        panel("Image bytes per second", [
            (f"sum by (stage) (rate(imgq_image_bytes_total{r}))", "{{stage}}"),
        ], unit="Bps", w=8),
        panel("Image preparation p95 and dedup hits", [
            ("histogram_quantile(0.95, sum by (le) "
             f"(rate(imgq_image_prepare_seconds_bucket{r})))", "prepare p95 (s)"),
            (f"sum by (kind) (rate(imgq_dedup_hits_total{r}))", "dedup {{kind}} /s"),
        ]),
        panel("Queue length (Redis)", [
            ("max by (key) (redis_key_size)", "{{key}}"),
        ]),
    ]  # fmt: skip


def layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Left-to-right rows of 24 columns; ids in order."""
    x = y = row_h = 0
    for i, p in enumerate(items, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        p["id"] = i
        x, row_h = x + w, max(row_h, h)
    return items


def dashboard() -> dict[str, Any]:
    return {
        "uid": "imgq-overview",
        "title": "imgq overview",
        "tags": ["imgq"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": DS,
                    "query": "label_values(imgq_api_requests_total, model)",
                    "definition": "label_values(imgq_api_requests_total, model)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                }
            ]
        },
        "annotations": {"list": []},
        "panels": layout(panels()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
