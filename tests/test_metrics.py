"""shared.metrics: private registries, real HTTP exposition, label guard, process metrics."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from shared.embedded_redis import free_port
from shared.fleet_metrics import FAMILIES as FLEET_FAMILIES
from shared.metrics import OTHER, LabelGuard, Metrics, start_metrics_server

# Every label any imgq metric may carry; anything per-job (ids, keys, URLs) must never appear.
ALLOWED_LABELS = {"model", "api", "status", "code", "outcome", "priority", "kind", "stage"}
ALLOWED_LABELS |= {"route", "queue"}  # batch route; broker queue (fleet series)


def value(m: Metrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def total(m: Metrics, name: str) -> float:
    return sum(s.value for fam in m.registry.collect() for s in fam.samples if s.name == name)


def family_names(registry: CollectorRegistry) -> set[str]:
    return {fam.name for fam in registry.collect()}


def test_metrics_live_on_a_private_registry_only() -> None:
    before = family_names(REGISTRY)
    m = Metrics()
    names = family_names(m.registry)
    assert len(names) >= 20
    assert all(n.startswith(("imgq_", "process_")) for n in names)
    assert not any(n.startswith("imgq_") for n in family_names(REGISTRY) - before)
    reg = CollectorRegistry()
    assert Metrics(reg).registry is reg


def test_two_instances_do_not_clash_and_count_separately() -> None:
    a, b = Metrics(), Metrics()
    a.jobs_total.labels(model="m", api="chat", status="succeeded").inc()
    a.jobs_total.labels(model="m", api="chat", status="succeeded").inc()
    b.jobs_total.labels(model="m", api="chat", status="succeeded").inc()
    assert total(a, "imgq_jobs_total") == 2.0
    assert total(b, "imgq_jobs_total") == 1.0
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
    for _doc, names in FLEET_FAMILIES.values():
        assert set(names) <= ALLOWED_LABELS, names


def test_worker_memory_and_cpu_are_exported() -> None:
    m = Metrics()
    rss = m.registry.get_sample_value("process_resident_memory_bytes")
    assert rss is not None and 10 * 2**20 < rss < 16 * 2**30  # this very process, in bytes
    cpu = m.registry.get_sample_value("process_cpu_seconds_total")
    assert cpu is not None and cpu > 0


def test_free_form_label_values_are_capped() -> None:
    # model_label=None: raw names, to test the cap itself (by default they map to "unknown").
    m = Metrics(label_caps={"model": 3, "code": 2, "outcome": 2}, model_label=None)
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
    assert total(m, "imgq_jobs_total") == 50.0  # folded, never dropped


def test_label_guard_truncates_long_values_and_leaves_fixed_labels_alone() -> None:
    g = LabelGuard({"model": 100}, max_len=8)
    assert g("model", "x" * 500) == "x" * 8
    assert [g("api", "chat") for _ in range(200)] == ["chat"] * 200  # api has no cap


def test_server_serves_metrics_over_real_http() -> None:
    m = Metrics()
    m.api_requests_total.labels(model="gpt-4.1-mini", api="chat", outcome="ok").inc()
    m.tokens_total.labels(model="gpt-4.1-mini", kind="image").inc(85)
    m.cost_usd_total.labels(model="gpt-4.1-mini").inc(0.002)
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


def test_ratelimit_remaining_has_a_series_only_once_seen() -> None:
    m = Metrics()
    m.set_ratelimit_remaining("gpt-4o", tokens=1234, requests=None)
    assert value(m, "imgq_ratelimit_remaining_tokens", model="gpt-4o") == 1234.0
    names = {s.name for fam in m.registry.collect() for s in fam.samples}
    assert "imgq_ratelimit_remaining_requests" not in names  # never set: no series


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
