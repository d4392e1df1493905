"""Deployment files are consistent with the code: compose, Dockerfile, Prometheus, Grafana.

No Docker engine here, so these parse the files and cross-check them: services and commands
against the real `imgq` CLI, env names against `Settings`, mounts against the repo, and every
PromQL metric name against what `shared.metrics.Metrics` and `shared.fleet_metrics` define.
tests/monitoring evaluates the same PromQL on a real Prometheus and unit-tests the alerts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from producer.api_service import spend_gauge
from shared.fleet_metrics import FAMILIES as FLEET_FAMILIES
from shared.metrics import Metrics
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "monitoring"
IMGQ_SERVICES = {"api", "worker", "sim"}
SUBCOMMAND = {"api": "api", "worker": "worker", "sim": "sim"}
# redis_exporter series the rules and dashboard use (https://github.com/oliver006/redis_exporter).
REDIS_EXPORTER_METRICS = {"redis_up"}
# Read by boto3 itself, not by Settings.
BOTO3_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(ROOT / "docker-compose.yml")
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


# -- PromQL ---------------------------------------------------------------------------------------
def defined_metric_names() -> set[str]:
    """Series names `Metrics` exposes, with the suffixes prometheus_client adds."""
    names: set[str] = set()
    for fam in Metrics().registry.collect():
        if fam.type == "counter":
            names |= {f"{fam.name}_total", f"{fam.name}_created"}
        elif fam.type == "histogram":
            names |= {f"{fam.name}_{s}" for s in ("bucket", "count", "sum", "created")}
        else:
            names.add(fam.name)
    return names


def recorded_names() -> set[str]:
    data = load_yaml(MON / "alerts.yml")
    return {r["record"] for g in data["groups"] for r in g["rules"] if "record" in r}


FLEET_NAMES = {f"imgq_{name}" for name in FLEET_FAMILIES}
# The API's own: spend per tenant (producer/api_service.py).
API_NAMES = {fam.name for fam in spend_gauge(CollectorRegistry()).collect()}
FLEET_NAMES |= API_NAMES
ALLOWED = defined_metric_names() | FLEET_NAMES | recorded_names() | {"up"} | REDIS_EXPORTER_METRICS
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
KEYWORDS |= {"unless", "offset", "bool", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (a careful regex pass; promtool is not available)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names: set[str] = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        token, before = m.group(), e[: m.start()]
        if before and (before[-1].isdigit() or before[-1] == "."):
            continue  # exponent or duration unit: 1e-9, 5m
        if e[m.end() :].lstrip().startswith("("):
            continue  # function or aggregation
        if token.lower() in KEYWORDS:
            continue
        names.add(token)
    return names


def test_promql_name_extraction_finds_names_and_only_names() -> None:
    expr = (
        'sum by (model) (rate(imgq_jobs_total{model=~"$model",status="failed"}[$__rate_interval]))'
        " / on (model) group_left sum(up{job='x'}) > 1e-9 and absent(redis_up offset 5m)"
        " or histogram_quantile(0.99, sum(rate(imgq_api_latency_seconds_bucket[5m])) by (le))"
    )
    assert promql_metric_names(expr) == {
        "imgq_jobs_total",
        "up",
        "redis_up",
        "imgq_api_latency_seconds_bucket",
    }
    # A typo or a name prometheus_client never exposes must be caught.
    assert promql_metric_names("rate(imgq_job_total[5m])") - ALLOWED == {"imgq_job_total"}
    assert promql_metric_names("imgq_api_latency_seconds") - ALLOWED == {"imgq_api_latency_seconds"}


def alert_rules() -> list[dict[str, Any]]:
    data = load_yaml(MON / "alerts.yml")
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads((MON / "grafana" / "dashboards" / "imgq.json").read_text())  # type: ignore[no-any-return]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_alert_rules_are_well_formed_and_use_defined_metrics() -> None:
    rules = [r for r in alert_rules() if "alert" in r]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    expected = {
        "ImgqJobErrorBudgetBurnFast",  # SLO burn rates replace the fixed failure/latency limits
        "ImgqJobErrorBudgetBurnSlow",
        "ImgqJobLatencyBudgetBurnFast",
        "ImgqJobLatencyBudgetBurnSlow",
        "ImgqHigh429Rate",
        "ImgqApiLatencyP99High",
        "ImgqQueueBacklog",
        "ImgqQueueJobsOld",
        "ImgqDeadLettersGrowing",
        "ImgqNoWorkersUp",
        "ImgqCostBurnHigh",
        "ImgqLimiterCooldownStuck",
    }
    assert expected <= set(names)
    for record in (r for r in alert_rules() if "record" in r):
        assert re.fullmatch(r"imgq:\w+:\w+", record["record"]), record["record"]
        assert promql_metric_names(record["expr"]) <= ALLOWED, record["record"]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")"), rule["alert"]
        used = promql_metric_names(expr)
        assert used, rule["alert"]
        assert used <= ALLOWED, (rule["alert"], used - ALLOWED)


def test_dashboard_is_valid_current_and_uses_defined_metrics() -> None:
    sys.path.insert(0, str(MON / "grafana"))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    text = (MON / "grafana" / "dashboards" / "imgq.json").read_text()
    assert text == build_dashboard.render(), "run monitoring/grafana/build_dashboard.py"

    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"{p['title']} overlaps another panel"
        cells |= area
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "prometheus"
        assert p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
    for expr in dashboard_exprs():
        assert expr.count("(") == expr.count(")"), expr
        used = promql_metric_names(expr)
        assert used or expr.startswith("vector("), expr  # a constant line (an SLO budget)
        assert used <= ALLOWED, (expr, used - ALLOWED)
    for var in dash["templating"]["list"]:
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"])
        assert m and m.group(1) in ALLOWED, var["query"]
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    # One panel per operator question of the README's "Operating imgq" section.
    for topic in ("jobs per second", "submit to result", "tokens per minute", "cost", "429",
                  "queue depth", "next job", "in flight", "retries", "dedup", "dead letters",
                  "slo", "memory"):  # fmt: skip
        assert topic in titles, topic


def test_every_defined_metric_is_charted_or_alerted() -> None:
    text = " ".join(dashboard_exprs() + [r["expr"] for r in alert_rules()])
    names = {fam.name for fam in Metrics().registry.collect()} | FLEET_NAMES
    # prometheus_client's process collector: RSS and CPU are charted, the rest is there if wanted.
    names -= {n for n in names if n.startswith("process_")}
    names |= {"process_resident_memory_bytes", "process_cpu_seconds"}
    for name in names:
        assert name in text, f"{name} is neither on the dashboard nor in an alert"


def test_grafana_provisioning_matches_compose_mounts(services: dict[str, Any]) -> None:
    ds = load_yaml(MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = ds["datasources"]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"
    prov = load_yaml(MON / "grafana" / "provisioning" / "dashboards" / "imgq.yml")
    path = prov["providers"][0]["options"]["path"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert mounts[path] == "./monitoring/grafana/dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/imgq.json"


def test_prometheus_config_matches_the_stack(services: dict[str, Any]) -> None:
    prom = load_yaml(MON / "prometheus.yml")
    mounts = dict(v.split(":")[:2][::-1] for v in services["prometheus"]["volumes"] if ":" in v)
    for rule_file in prom["rule_files"]:
        assert mounts[rule_file] == "./monitoring/alerts.yml"
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    (sd,) = jobs["imgq-worker"]["dns_sd_configs"]
    assert sd["names"] == ["worker"]
    assert str(sd["port"]) == services["worker"]["environment"]["IMGQ_METRICS_PORT"]
    assert str(sd["port"]) in [str(p) for p in services["worker"]["expose"]]
    api_env = services["api"]["environment"]
    api_metrics = api_env["IMGQ_API_METRICS_PORT"]  # the key-free side port, not the API's
    assert jobs["imgq-api"]["static_configs"][0]["targets"] == [f"api:{api_metrics}"]
    assert api_metrics in [str(p) for p in services["api"]["expose"]]
    assert not any(str(p).endswith(f":{api_metrics}") for p in services["api"]["ports"])
    assert jobs["redis"]["static_configs"][0]["targets"] == ["redis-exporter:9121"]
    # Every job="..." an alert or panel selects is a scrape job.
    exprs = " ".join(dashboard_exprs() + [r["expr"] for r in alert_rules()])
    assert set(re.findall(r'job="([^"]+)"', exprs)) <= set(jobs)


# -- compose --------------------------------------------------------------------------------------
def test_services_have_images_restart_and_healthchecks(services: dict[str, Any]) -> None:
    required = {
        "redis",
        "api",
        "worker",
        "sim",
        "prometheus",
        "grafana",
        "redis-exporter",
        "flower",
    }
    assert required <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "image" in svc and "build" not in svc:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", svc["image"]), f"{name}: pin a tag"
            assert not svc["image"].endswith(":latest"), name
        if name not in {"minio-init"}:
            assert svc.get("restart") == "unless-stopped", name
        if name not in {"minio-init", "redis-exporter"}:  # exporter image has no shell
            assert "healthcheck" in svc, name
    for name in IMGQ_SERVICES:
        assert services[name]["build"] == "."
        assert services[name]["init"] is True
    assert services["sim"]["profiles"] == ["sim"]
    assert services["minio"]["profiles"] == ["s3"]


def test_flower_watches_the_same_broker_as_the_workers(services: dict[str, Any]) -> None:
    flower = services["flower"]
    assert flower["command"][:2] == ["celery", "flower"]
    port = next(a for a in flower["command"] if a.startswith("--port=")).split("=")[1]
    assert flower["ports"] == [f"127.0.0.1:{port}:{port}"]  # no auth: never on a public port
    assert f"127.0.0.1:{port}/healthcheck" in " ".join(flower["healthcheck"]["test"])
    worker_redis = services["worker"]["environment"]["IMGQ_REDIS_URL"]
    default = re.fullmatch(r"\$\{IMGQ_REDIS_URL:-(.+)\}", worker_redis)
    assert default
    broker = flower["environment"]["CELERY_BROKER_URL"]
    assert broker == f"${{IMGQ_BROKER_URL:-${{IMGQ_REDIS_URL:-{default.group(1)}}}}}"


def test_worker_is_scalable_and_shuts_down_warm(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["command"] == ["worker", "--concurrency", "256"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N
    grace = re.fullmatch(r"(\d+)([sm])", worker["stop_grace_period"])
    assert grace
    seconds = int(grace.group(1)) * (60 if grace.group(2) == "m" else 1)
    # In-flight jobs may wait for capacity and then for the API call; both must fit.
    s = Settings()
    assert seconds >= s.capacity_wait_seconds + s.request_timeout_seconds
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_ports_agree_between_commands_mappings_and_healthchecks(services: dict[str, Any]) -> None:
    for name in ("api", "sim"):
        cmd = services[name]["command"]
        port = cmd[cmd.index("--port") + 1]
        assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
        assert any(str(p).endswith(f":{port}") for p in services[name]["ports"]), name
        assert f"127.0.0.1:{port}/" in " ".join(services[name]["healthcheck"]["test"])
    worker_port = services["worker"]["environment"]["IMGQ_METRICS_PORT"]
    assert f"127.0.0.1:{worker_port}/metrics" in " ".join(services["worker"]["healthcheck"]["test"])


def settings_env_names() -> set[str]:
    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names |= {c for c in choices if isinstance(c, str)}
        else:
            names.add(f"IMGQ_{field.upper()}")
    return names


def test_env_names_exist_in_settings_and_no_secret_is_hard_coded(
    services: dict[str, Any],
) -> None:
    known = settings_env_names()
    assert {"IMGQ_REDIS_URL", "OPENAI_API_KEY", "IMGQ_METRICS_PORT"} <= known
    for name in IMGQ_SERVICES:
        env = services[name].get("environment", {})
        assert set(env) <= known | BOTO3_ENV, (name, set(env) - known - BOTO3_ENV)
        assert services[name]["env_file"] == [{"path": ".env", "required": False}]
    for name in ("api", "worker"):
        assert services[name]["environment"]["OPENAI_API_KEY"] == "${OPENAI_API_KEY:-}"
    for path in ("docker-compose.yml", "Dockerfile", ".dockerignore", "monitoring/alerts.yml"):
        assert not re.search(r"sk-[A-Za-z0-9_-]{8,}", (ROOT / path).read_text()), path


def test_bind_mounts_exist_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith(("./", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} is not in the repo"
            else:
                assert source in declared, f"{name}: volume {source} not declared"


def test_commands_are_real_imgq_subcommands(services: dict[str, Any]) -> None:
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["imgq"]
    module, func = script.split(":")
    if not (ROOT / (module.replace(".", "/") + ".py")).exists():
        pytest.skip(f"{module} (the imgq CLI) is not written yet")
    runner = f"import sys; sys.argv[0] = 'imgq'; from {module} import {func}; {func}()"
    for name in sorted(IMGQ_SERVICES):
        cmd = services[name]["command"]
        assert cmd[0] == SUBCOMMAND[name]
        out = subprocess.run(
            [sys.executable, "-c", runner, cmd[0], "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (name, out.stderr[-2000:])
        for flag in (a for a in cmd[1:] if a.startswith("--")):
            assert flag in out.stdout, f"`imgq {cmd[0]}` has no {flag}"


# -- Dockerfile -----------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_builds_a_non_root_imgq_image() -> None:
    ins = dockerfile_instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert ("ENTRYPOINT", '["imgq"]') in ins
    assert any(op == "RUN" and "pip install ." in arg for op, arg in ins)
    copied: set[str] = set()
    for op, arg in ins:
        if op != "COPY":
            continue
        *sources, _dest = arg.split()
        for src in sources:
            matches = list(ROOT.glob(src.rstrip("/")))
            assert matches or "*" in src, f"COPY {src}: not in the repo"
            copied.add(src.rstrip("/"))
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in packages["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied into the image"


def test_dockerignore_keeps_secrets_and_junk_out() -> None:
    entries = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".git", ".venv"} <= entries
    # Nothing the image needs may be ignored.
    for _op, arg in (i for i in dockerfile_instructions() if i[0] == "COPY"):
        for src in arg.split()[:-1]:
            assert src.rstrip("/*") not in entries, src
