"""The helper that splits an alert into the signals the Prometheus test evaluates."""

from __future__ import annotations

from tests.monitoring.prom import grafana_to_promql, operands


def test_comparisons_and_set_operators_split_at_the_top_level_only() -> None:
    expr = 'sum(rate(a[5m])) / sum(rate(b[5m])) > 0.02 and sum(c{x="a > b"}) > 1'
    assert operands(expr) == ["sum(rate(a[5m])) / sum(rate(b[5m]))", 'sum(c{x="a > b"})']


def test_parenthesised_groups_are_opened_and_numbers_dropped() -> None:
    expr = "(x > (14.4 * 0.01) and y > 3) or\n(z > 6 * 0.01)"
    assert operands(expr) == ["x", "y", "z"]
    assert operands("max by (i) (p{job='w'}) > 2 * 1024 * 1024") == ["max by (i) (p{job='w'})"]
    assert operands("(a) + (b)") == ["(a) + (b)"]  # arithmetic is one signal
    assert operands('absent(up{job="w"})') == ['absent(up{job="w"})']


def test_grafana_variables_become_promql() -> None:
    got = grafana_to_promql('rate(x{model=~"$model"}[$__rate_interval]) + increase(y[$__range])')
    assert got == 'rate(x{model=~".*"}[1m]) + increase(y[5m])'
