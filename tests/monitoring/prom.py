"""Real Prometheus for tests: find the binaries, run a server on a free port, query its HTTP API.

The binaries come from Debian's packages (`.ci/run` installs them); without them the tests skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "monitoring"
INSTALL_HINT = (
    "sudo apt-get install -y --no-install-recommends prometheus prometheus-redis-exporter"
    " (Debian/Ubuntu; `.ci/run` does it)"
)


def binary(name: str) -> str:
    """The path of a Prometheus tool, or skip the test saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` is not installed: {INSTALL_HINT}")
    return path


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector (or scalar as one sample) of `expr` now; raises on a PromQL error."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]  # type: ignore[no-any-return]

    def targets_up(self) -> dict[str, str]:
        data = self.api("targets")
        return {t["labels"]["job"]: t["health"] for t in data["activeTargets"]}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_prometheus(
    tmp: Path, jobs: dict[str, list[str]], rule_files: list[Path], interval: str = "1s"
) -> Prometheus:
    """`prometheus` scraping `{job: [host:port]}` every `interval`, evaluating `rule_files`."""
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=log,
    )
    prom = Prometheus(url=f"http://127.0.0.1:{port}", proc=proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1).close()
            return prom
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                prom.stop()
                raise RuntimeError((tmp / "prometheus.log").read_text()[-2000:]) from None
            time.sleep(0.1)


# -- the expressions under test ------------------------------------------------------------------
def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((MON / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the checked-in dashboard."""
    dash = json.loads((MON / "grafana" / "dashboards" / "imgq.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


# Grafana's $__rate_interval is max(4 x scrape interval, step): 1m for a 15 s scrape.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "5m", "$model": ".*"}


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced as Grafana would for a 5 min range of all models."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


_BINARY_OPS = re.compile(r"\s(and|or|unless|>=|<=|==|!=|>|<)\s")


def _enclosed(expr: str) -> bool:
    """`expr` is one parenthesised group: "(a) + (b)" is not, "((a) + (b))" is."""
    if not (expr.startswith("(") and expr.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(expr):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(expr) - 1:
            return False
    return True


def _split_top_level(expr: str) -> list[str]:
    parts, depth, start, i, quote = [], 0, 0, 0, ""
    while i < len(expr):
        ch = expr[i]
        if quote:
            quote = "" if ch == quote and expr[i - 1] != "\\" else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            m = _BINARY_OPS.match(expr, i)
            if m:
                parts.append(expr[start:i])
                start = i = m.end()
                continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def operands(expr: str) -> list[str]:
    """The signals of `expr`: operands of its comparisons and set operators, numbers left out.

    An alert's expression is usually `signal > threshold`: under a healthy load the whole
    expression is empty by design, but each signal must still return data. Parenthesised
    groups are opened (`(a > 1 and b > 2) or c` -> a, b, c).
    """
    expr = expr.strip()
    while _enclosed(expr):
        expr = expr[1:-1].strip()
    parts = _split_top_level(expr)
    if len(parts) == 1:
        return [] if re.fullmatch(r"[\d.eE+\-*/ ()]+", expr) else [expr]
    return [signal for p in parts for signal in operands(re.sub(r"^bool\s+", "", p))]
