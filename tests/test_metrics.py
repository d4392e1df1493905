"""shared.metrics: private registries, real HTTP exposition, label guard, summary()."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from shared.embedded_redis import free_port
from shared.metrics import OTHER, LabelGuard, Metrics, exposition, start_metrics_server, summary

# Every label any imgq metric may carry; anything per-job (ids, keys, URLs) must never appear.
ALLOWED_LABELS = {"model", "api", "status", "code", "outcome", "priority", "kind", "stage"}


def family_names(registry: CollectorRegistry) -> set[str]:
    return {fam.name for fam in registry.collect()}


def test_metrics_live_on_a_private_registry_only() -> None:
    before = family_names(REGISTRY)
    m = Metrics()
    names = family_names(m.registry)
    assert len(names) >= 20
    assert all(n.startswith("imgq_") for n in names)
    assert not any(n.startswith("imgq_") for n in family_names(REGISTRY) - before)
    reg = CollectorRegistry()
    assert Metrics(reg).registry is reg


def test_two_instances_do_not_clash_and_count_separately() -> None:
    a, b = Metrics(), Metrics()
    a.jobs_total.labels(model="m", api="chat", status="succeeded").inc()
    a.jobs_total.labels(model="m", api="chat", status="succeeded").inc()
    b.jobs_total.labels(model="m", api="chat", status="succeeded").inc()
    assert summary(a.registry)["jobs_succeeded"] == 2.0
    assert summary(b.registry)["jobs_succeeded"] == 1.0
    # Registering the same names twice on ONE registry is an error, as it should be.
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(a.registry)


def test_names_follow_base_unit_conventions() -> None:
    m = Metrics()
    for fam in m.registry.collect():
        if fam.type == "histogram":
            assert fam.name.endswith("_seconds"), fam.name
        if fam.type == "counter":
            # prometheus_client strips _total from a counter family's name and adds it to samples
            assert not fam.name.endswith("_total"), fam.name


def test_label_names_are_low_cardinality_kinds() -> None:
    m = Metrics()
    for attr, metric in vars(m).items():
        names = getattr(metric, "_labelnames", None)
        if names is None:
            continue
        assert set(names) <= ALLOWED_LABELS, (attr, names)


def test_free_form_label_values_are_capped() -> None:
    m = Metrics(label_caps={"model": 3, "code": 2, "outcome": 2})
    for i in range(50):  # e.g. a client sending a new model name per job
        m.jobs_total.labels(model=f"model-{i}", api="chat", status="succeeded").inc()
        m.job_failures_total.labels(f"model-{i}", f"code-{i}").inc()  # positional too
    models = {
        s.labels["model"]
        for fam in m.registry.collect()
        for s in fam.samples
        if s.name == "imgq_jobs_total"
    }
    assert models == {"model-0", "model-1", "model-2", OTHER}
    codes = {
        s.labels["code"]
        for fam in m.registry.collect()
        for s in fam.samples
        if s.name == "imgq_job_failures_total"
    }
    assert codes == {"code-0", "code-1", OTHER}
    assert summary(m.registry)["jobs_succeeded"] == 50.0  # folded, never dropped


def test_label_guard_truncates_long_values_and_leaves_fixed_labels_alone() -> None:
    g = LabelGuard({"model": 100}, max_len=8)
    assert g("model", "x" * 500) == "x" * 8
    assert [g("api", "chat") for _ in range(200)] == ["chat"] * 200  # api has no cap


def test_server_serves_metrics_over_real_http() -> None:
    m = Metrics()
    m.observe_api_call("gpt-4.1-mini", "chat", "ok", 0.7)
    m.observe_tokens("gpt-4.1-mini", input=120, output=30, image=85, cost_usd=0.002)
    server = start_metrics_server(free_port(), m.registry, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
    finally:
        server.close()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    key = (("api", "chat"), ("model", "gpt-4.1-mini"), ("outcome", "ok"))
    assert values[("imgq_api_requests_total", key)] == 1.0
    assert values[("imgq_tokens_total", (("kind", "image"), ("model", "gpt-4.1-mini")))] == 85.0
    assert values[("imgq_cost_usd_total", (("model", "gpt-4.1-mini"),))] == pytest.approx(0.002)
    with pytest.raises(OSError):  # closed: nothing listens any more
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_server_moves_to_the_next_free_port_within_the_span() -> None:
    m = Metrics()
    first = start_metrics_server(0, m.registry, addr="127.0.0.1")
    try:
        second = start_metrics_server(first.port, m.registry, addr="127.0.0.1", port_span=5)
        try:
            assert first.port < second.port < first.port + 5
            with urllib.request.urlopen(f"http://127.0.0.1:{second.port}/metrics") as r:
                assert b"# TYPE imgq_jobs_total counter" in r.read()
        finally:
            second.close()
        with pytest.raises(OSError, match="no free metrics port"):
            start_metrics_server(first.port, m.registry, addr="127.0.0.1")
    finally:
        first.close()


def test_exposition_for_an_existing_http_app() -> None:
    m = Metrics()
    m.dedup_hits_total.labels(kind="finished").inc(3)
    body, content_type = exposition(m.registry)
    assert content_type.startswith("text/plain")
    assert b'imgq_dedup_hits_total{kind="finished"} 3.0' in body


def test_summary_totals_and_quantiles() -> None:
    m = Metrics()
    empty = summary(m.registry)
    assert empty["jobs_succeeded"] == 0.0 and empty["image_bytes_saved_ratio"] == 0.0
    assert "api_latency_p50_seconds" not in empty  # no observations: no made-up latency

    for _ in range(90):
        m.observe_api_call("gpt-4.1-mini", "chat", "ok", 0.8)  # bucket (0.5, 1]
    for _ in range(10):
        m.observe_api_call("gpt-4.1-mini", "responses", 429, 12.0)  # bucket (10, 15]
    m.observe_job("gpt-4.1-mini", "chat", "interactive", None, 2.0)
    m.observe_job("gpt-4.1-mini", "chat", "bulk", "invalid_image", 0.3)
    m.jobs_submitted_total.labels(model="gpt-4.1-mini", priority="bulk").inc(2)
    m.observe_tokens("gpt-4.1-mini", input=1000, output=200, estimated_input=1010, cost_usd=0.5)
    m.image_bytes_total.labels(stage="original").inc(4_000_000)
    m.image_bytes_total.labels(stage="sent").inc(1_000_000)
    m.retries_total.labels(model="gpt-4.1-mini", code="rate_limited").inc()
    m.in_flight_requests.labels(model="gpt-4.1-mini").set(7)

    s = summary(m.registry)
    assert s["api_requests"] == 100.0
    assert s["api_errors"] == 10.0
    assert s["rate_limited"] == 10.0
    assert (s["jobs_submitted"], s["jobs_succeeded"], s["jobs_failed"]) == (2.0, 1.0, 1.0)
    assert (s["tokens_input"], s["tokens_output"], s["tokens_estimated_input"]) == (1000, 200, 1010)
    assert s["cost_usd"] == pytest.approx(0.5)
    assert s["image_bytes_saved_ratio"] == pytest.approx(0.75)
    assert (s["retries"], s["in_flight"]) == (1.0, 7.0)
    # Same interpolation as PromQL's histogram_quantile: p50 inside (0.5, 1], p99 inside (10, 15].
    assert 0.5 < s["api_latency_p50_seconds"] <= 1.0
    assert s["api_latency_p50_seconds"] == pytest.approx(0.5 + 0.5 * 50 / 90)
    assert 10.0 < s["api_latency_p99_seconds"] <= 15.0
    assert "limiter_wait_p95_seconds" not in s
    assert "job_duration_p50_seconds" in s
    assert all(isinstance(v, float) for v in s.values())


def test_failure_and_rate_limit_bookkeeping() -> None:
    m = Metrics()
    m.observe_api_call("gpt-4o", "chat", "rate_limited", 0.1)
    m.observe_api_call("gpt-4o", "chat", 500, 0.1)
    m.set_ratelimit_remaining("gpt-4o", tokens=1234, requests=None)
    text = exposition(m.registry)[0].decode()
    assert 'imgq_rate_limited_total{model="gpt-4o"} 1.0' in text
    assert 'imgq_ratelimit_remaining_tokens{model="gpt-4o"} 1234.0' in text
    assert "imgq_ratelimit_remaining_requests{" not in text  # never set: no series


def test_cooldown_gauge_counts_down_by_itself() -> None:
    import time

    m = Metrics()
    m.set_cooldown_until("gpt-4o", time.time() + 30)
    m.set_cooldown_until("gpt-4.1", time.time() - 5)  # already over: 0, never negative

    def read() -> dict[str, float]:
        return {
            s.labels["model"]: s.value
            for fam in m.registry.collect()
            for s in fam.samples
            if s.name == "imgq_cooldown_seconds"
        }

    first = read()
    assert 29 < first["gpt-4o"] <= 30 and first["gpt-4.1"] == 0.0
    time.sleep(0.2)
    assert read()["gpt-4o"] < first["gpt-4o"]
