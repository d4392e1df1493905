"""monitoring/alerts.yml checked and unit-tested by promtool (Debian's `prometheus` package)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from shared import errors
from tests.monitoring.prom import MON, alert_rules, binary

TESTS = MON / "alerts_test.yml"


def promtool(*args: str, cwd: Path = MON) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    # The harness can fail: the same tests, expecting one alert on the wrong model, do not pass.
    shutil.copy(MON / "alerts.yml", tmp_path / "alerts.yml")
    text = TESTS.read_text().replace(
        "exp_labels: {severity: warning, model: gpt-4o}",
        "exp_labels: {severity: warning, model: gpt-4.1-mini}",
        1,
    )
    (tmp_path / "alerts_test.yml").write_text(text)
    out = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr


def cases() -> list[tuple[str, dict[str, Any]]]:
    doc = yaml.safe_load(TESTS.read_text())
    return [(t["name"], c) for t in doc["tests"] for c in t.get("alert_rule_test", [])]


def minutes(duration: str) -> float:
    total = 0.0
    for n, unit in re.findall(r"(\d+)([smh])", duration):
        total += int(n) * {"s": 1 / 60, "m": 1, "h": 60}[unit]
    return total


def test_every_alert_fires_in_a_test_stays_quiet_in_another_and_waits_for_its_for() -> None:
    all_cases = cases()
    for rule in (r for r in alert_rules() if "alert" in r):
        name = rule["alert"]
        mine = [(group, c) for group, c in all_cases if c["alertname"] == name]
        firing = [(g, c) for g, c in mine if c.get("exp_alerts")]
        quiet = [(g, c) for g, c in mine if not c.get("exp_alerts")]
        assert firing, f"{name}: no test where it fires"
        assert quiet, f"{name}: no test where it stays quiet"
        if "for" in rule:
            # Quiet before `for:` has passed, in the same series, then firing.
            assert any(
                qg == fg and minutes(str(q["eval_time"])) < minutes(str(f["eval_time"]))
                for fg, f in firing
                for qg, q in quiet
            ), f"{name}: no quiet-then-firing pair checks its for: {rule['for']}"


def test_the_callers_codes_excluded_from_the_slo_are_real_permanent_codes() -> None:
    found = {m for r in alert_rules() for m in re.findall(r'code!~"([^"]+)"', r["expr"])}
    assert len(found) == 1, "one list of the caller's codes, the same in every window"
    codes = set(found.pop().split("|"))
    permanent = {
        obj.code
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.PermanentError)
    }
    assert codes <= permanent, codes - permanent
    # Failures that are ours (or upstream's) must burn the budget.
    assert not codes & {"api_error", "timeout", "internal_error", "storage_unavailable"}


def test_promtool_check_config_of_the_compose_prometheus(tmp_path: Path) -> None:
    # The same config with the rule file where compose mounts it (here: next to the config).
    config = yaml.safe_load((MON / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(MON / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
