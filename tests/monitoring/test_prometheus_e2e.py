"""Every dashboard query and every alert signal, evaluated by a real Prometheus on a real load.

One worker process (with its /metrics and the fleet series), the HTTP API process, redis_exporter
and the simulator; Prometheus scrapes them every second and evaluates monitoring/alerts.yml.
The load: successes, a 429 (then a retry and capacity waits), a bad image and a dedup hit.
Each expression must return at least one finite sample, or be listed in EXPECTED_EMPTY with
the reason it is empty under this load.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from shared.embedded_redis import free_port
from tests.conftest import Sim
from tests.monitoring.conftest import imgq_command
from tests.monitoring.prom import (
    MON,
    Prometheus,
    alert_rules,
    binary,
    dashboard_targets,
    grafana_to_promql,
    operands,
    start_prometheus,
)
from tests.pipeline.conftest import make_image
from tests.procs import Starter, wait_for_worker, wait_http, worker_env

pytestmark = pytest.mark.slow

# expression -> why it returns nothing under this test's healthy load.
EXPECTED_EMPTY = {
    'absent(up{job="imgq-worker"})': "the worker is up",
}
PROMPT = "Describe this image."
BIG = 1000  # gpt-4o output tokens reserved per call: three at once exceed the simulator's TPM


def finite(samples: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in samples)


KEY: dict[str, str] = {}  # the tenant's API key, created by the test


def call(url: str, body: bytes | None = None, timeout: float = 30) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEY['key']}", "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def post_job(api: str, image: bytes, **fields: Any) -> dict[str, Any]:
    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    body = json.dumps({"images": [{"data": data_url}], "prompt": PROMPT, **fields}).encode()
    return call(f"{api}/v1/jobs", body)


def wait_job(api: str, job_id: str, seconds: float = 60) -> dict[str, Any]:
    return call(f"{api}/v1/jobs/{job_id}?wait={seconds}", timeout=seconds + 10)


def until(prom: Prometheus, expr: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not finite(prom.query(expr)) or not all(
        float(s["value"][1]) > 0 for s in prom.query(expr)
    ):
        assert time.monotonic() < deadline, f"never true: {expr}"
        time.sleep(0.5)


def drive_load(api: str, prom: Prometheus) -> None:
    # 1. A burst on gpt-4o before the limiter has seen any header: one call gets a 429, is
    #    retried, and then waits for capacity (re-queued every 2 s) until its window frees.
    big = {"model": "gpt-4o", "max_output_tokens": BIG, "detail": "low", "dedup": False}
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda i: post_job(api, make_image(100 + i), **big), range(3)))
    # Two more once the limiter knows the real TPM: its bucket is empty for ~20 s, longer than
    # IMGQ_CAPACITY_WAIT_SECONDS, so they wait for capacity and go back to the queue.
    time.sleep(1)
    for i in range(2):
        post_job(api, make_image(110 + i), **big)
    # 2. Successes on gpt-4.1-mini (its own limit), a bad image, and a dedup hit.
    small = {"max_output_tokens": 20, "priority": "interactive"}
    ids = [post_job(api, make_image(i), **small)["job_id"] for i in range(6)]
    ids.append(post_job(api, make_image(7), **{**small, "priority": "bulk"})["job_id"])
    done = [wait_job(api, i) for i in ids]
    assert [d["status"] for d in done] == ["succeeded"] * 7, [d.get("error") for d in done]
    again = wait_job(api, post_job(api, make_image(0), **small)["job_id"])
    assert again["status"] == "succeeded" and again["dedup_of"], again
    # A PNG cut in half passes the submit-time sniffing and fails to decode in the worker.
    png = make_image(50, size=(300, 200))
    bad = wait_job(api, post_job(api, png[: len(png) // 2], **small)["job_id"])
    assert bad["status"] == "failed" and bad["error"]["code"] == "invalid_image", bad
    until(prom, "sum(imgq_rate_limited_total)")
    until(prom, 'sum(imgq_retries_total{code="rate_limited"})')
    until(prom, 'sum(rate(imgq_limiter_wait_seconds_count{model="gpt-4o"}[1m]))')
    time.sleep(5)  # counters born in the last scrape need a second sample for rate()


@pytest.mark.timeout(300)  # ~30 s alone; slower when the machine is busy
def test_every_dashboard_query_and_alert_signal_returns_data(
    redis_url: str,
    simulator_factory: Callable[..., Sim],
    processes: Starter,
    tmp_path: Path,
) -> None:
    binary("prometheus")
    exporter_bin = binary("prometheus-redis-exporter")
    sim = simulator_factory("--latency-ms", "200", "--jitter-ms", "0", "--tpm", "3000",
                            "--rpm", "1000", "--seed", "1")  # fmt: skip
    limits = {"gpt-4o": {"tpm": 1_000_000, "rpm": 10_000},
              "gpt-4.1-mini": {"tpm": 1_000_000, "rpm": 10_000}}  # fmt: skip
    worker_port, api_port, exporter_port = free_port(), free_port(), free_port()
    api_metrics_port = free_port()
    env = worker_env(redis_url, sim, IMGQ_MODEL_LIMITS=json.dumps(limits),
                     IMGQ_CAPACITY_WAIT_SECONDS="2", IMGQ_METRICS_PORT=str(worker_port),
                     IMGQ_API_METRICS_PORT=str(api_metrics_port))  # fmt: skip
    # A tenant with its API key: the API checks keys, and exports spend per tenant.
    made = subprocess.run(imgq_command("keys", "create", "--tenant", "team-a", "--json"),
                          env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    KEY.update(json.loads(made.stdout))
    worker = processes("worker", imgq_command("worker", "-c", "8", "-l", "INFO"), env)
    api_proc = processes(
        "api", imgq_command("api", "--host", "127.0.0.1", "--port", str(api_port)), env
    )
    exporter = processes("redis-exporter", [exporter_bin, "-redis.addr", redis_url,
                         "-web.listen-address", f"127.0.0.1:{exporter_port}"])  # fmt: skip
    wait_for_worker(redis_url)
    wait_http(f"http://127.0.0.1:{worker_port}/metrics", worker, tmp_path / "worker.log")
    api = f"http://127.0.0.1:{api_port}"
    wait_http(f"{api}/healthz", api_proc, tmp_path / "api.log")
    wait_http(
        f"http://127.0.0.1:{exporter_port}/metrics", exporter, tmp_path / "redis-exporter.log"
    )
    prom = start_prometheus(
        tmp_path,
        {
            "imgq-worker": [f"127.0.0.1:{worker_port}"],
            "imgq-api": [f"127.0.0.1:{api_metrics_port}"],  # IMGQ_API_METRICS_PORT: no key
            "redis": [f"127.0.0.1:{exporter_port}"],
        },
        [MON / "alerts.yml"],
    )
    try:
        until(prom, 'count(up{job=~"imgq-worker|imgq-api|redis"} == 1) == 3')
        drive_load(api, prom)
        # The 429'd job waited for capacity and was handed back to the broker (workers/tasks.py).
        deadline = time.monotonic() + 60
        while "no capacity yet" not in (tmp_path / "worker.log").read_text():
            assert time.monotonic() < deadline, "the 429'd job never waited for capacity"
            time.sleep(0.5)
        assert prom.targets_up() == {"imgq-worker": "up", "imgq-api": "up", "redis": "up"}
        # The fleet series come from exactly one process.
        assert [s["value"][1] for s in prom.query("sum(imgq_fleet_exporter)")] == ["1"]

        checked: dict[str, str] = {}  # expr -> where it comes from
        for title, expr in dashboard_targets():
            checked[grafana_to_promql(expr)] = f"dashboard: {title}"
        for rule in alert_rules():
            name = rule.get("alert") or rule["record"]
            checked[rule["expr"].strip()] = f"rule {name}"
            for signal in operands(rule["expr"]):
                checked.setdefault(signal, f"rule {name} (operand)")

        empty = {}
        for expr, where in checked.items():
            got = prom.query(expr)
            if not finite(got):
                empty[expr] = f"{where}; got {got}"
        # An alert's whole expression is empty on a healthy load (it does not fire); its
        # operands are what must carry data, and recording rules must too.
        alert_exprs = {r["expr"].strip() for r in alert_rules() if "alert" in r}
        unexpected = {
            e: w for e, w in empty.items() if e not in alert_exprs and e not in EXPECTED_EMPTY
        }
        assert not unexpected, json.dumps(unexpected, indent=1)
        stale = set(EXPECTED_EMPTY) - set(empty)
        assert not stale, f"listed as expected-empty but returned data: {stale}"

        # The numbers are the load's, not just present.
        def one(expr: str) -> float:
            (sample,) = prom.query(expr)
            return float(sample["value"][1])

        assert one('sum(imgq_jobs_submitted_total{model="gpt-4.1-mini"})') == 9
        assert one('sum(imgq_jobs_total{model="gpt-4.1-mini", status="succeeded"})') == 8
        assert one('sum(imgq_job_failures_total{code="invalid_image"})') == 1
        assert one('sum(imgq_dedup_hits_total{kind="finished"})') == 1
        assert one('sum(imgq_rate_limited_total{model="gpt-4o"})') >= 1
        assert one('sum(imgq_limiter_tokens_limit{model="gpt-4o"})') == 3000  # learnt from headers
        assert one('count(process_resident_memory_bytes{job=~"imgq-worker|imgq-api"} > 2^20)') == 2
        assert one('count(imgq_tenant_spend_usd{tenant="team-a"})') == 3  # day, month, billed
        # The model picker's values exist.
        assert {
            s["metric"]["model"] for s in prom.query("count by (model) (imgq_api_requests_total)")
        } >= {"gpt-4o", "gpt-4.1-mini"}
    finally:
        prom.stop()
