"""Per-key quotas and cost budgets, over real HTTP with a real worker and the simulator."""

from __future__ import annotations

import json
import time

import pytest

from tests.api.conftest import ApiStack, imgq, job, wait_done
from tests.pipeline.conftest import make_image

# One image + the default 1024 output tokens on gpt-4.1-mini reserves $0.002638 (an upper
# estimate): a $0.006 daily budget holds two such jobs at once, never three.
BUDGET = "0.006"


def _usage(stack: ApiStack, name: str) -> dict[str, float]:
    out = imgq(stack.env, "keys", "usage", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    row: dict[str, float] = next(r for r in rows if r["id"] == stack.ids[name])
    return row


def test_a_budget_running_out_mid_batch_fails_the_rest_and_spends_nothing_more(
    api_stack: ApiStack,
) -> None:
    api_stack.key("budgeted", "--daily-budget-usd", BUDGET)
    c = api_stack.client("budgeted")
    calls = api_stack.sim.stats()["admitted_requests"]
    # The 4th job alone would fit ($0.0012): once the budget ran out, the rest fail anyway.
    jobs = [job(make_image(40 + i), job_id=f"b-{i}") for i in range(3)]
    jobs += [job(make_image(43), job_id="b-3", max_output_tokens=100), job(make_image(44))]
    resp = c.post("/v1/jobs/batch", json={"jobs": jobs})
    assert resp.status_code == 200, resp.text
    items = resp.json()["jobs"]
    assert [i["index"] for i in items] == [0, 1, 2, 3, 4]
    assert [i["job"]["status"] for i in items] == ["queued", "queued"] + ["failed"] * 3
    for item in items[2:]:
        assert item["status"] == 202 and item["job"]["error"]["code"] == "budget_exceeded"
    done = [wait_done(c, f"b-{i}") for i in range(2)]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"]
    time.sleep(1.0)  # nothing else may be called for the refused jobs
    assert api_stack.sim.stats()["admitted_requests"] == calls + 2
    # Settled with the bill: the spend is what the two calls cost, not their estimates.
    billed = sum(d["cost_usd"] for d in done)
    assert 0 < billed < 0.001
    usage = _usage(api_stack, "budgeted")
    assert usage["day_usd"] == pytest.approx(billed, abs=2e-6)
    assert usage["month_usd"] == pytest.approx(billed, abs=2e-6)
    assert usage["budget_usd"] == float(BUDGET)
    # ... and the metric labelled by tenant says the same.
    import requests

    text = requests.get(api_stack.metrics_url).text
    line = next(x for x in text.splitlines()
                if x.startswith('imgq_tenant_spend_usd{period="billed",tenant="budgeted"}'))  # fmt: skip
    assert float(line.split()[-1]) == pytest.approx(billed, abs=2e-6)


def test_a_refused_submit_gives_its_reservation_back(api_stack: ApiStack) -> None:
    api_stack.key("refunds", "--daily-budget-usd", "0.003")
    c = api_stack.client("refunds")
    # Refused by admission (not an image): reserved first, then released.
    bad = c.post("/v1/jobs", json={"images": ["data:image/png;base64,aGVsbG8="], "prompt": "x"})
    assert bad.status_code == 202 and bad.json()["status"] == "failed", bad.text
    assert _usage(api_stack, "refunds")["day_usd"] == 0.0
    ok = c.post("/v1/jobs", json=job(make_image(46), priority="bulk", job_id="held"))
    assert ok.json()["status"] == "queued"
    assert _usage(api_stack, "refunds")["day_usd"] == pytest.approx(0.002638, abs=1e-6)
    # Cancelling gives the whole estimate back.
    assert c.delete("/v1/jobs/held").status_code == 200
    assert _usage(api_stack, "refunds")["day_usd"] == 0.0


def test_quotas_refuse_before_any_call(api_stack: ApiStack) -> None:
    api_stack.key("narrow", "--models", "gpt-4.1-mini", "--max-output-tokens", "200",
                  "--priorities", "interactive")  # fmt: skip
    c = api_stack.client("narrow")
    calls = api_stack.sim.stats()["admitted_requests"]
    for fields in (
        {"model": "gpt-4o", "max_output_tokens": 100},
        {"max_output_tokens": 500},
        {"max_output_tokens": 100, "priority": "bulk"},
        {},  # the default max_output_tokens (1024) is over the key's 200 too
    ):
        resp = c.post("/v1/jobs", json=job(make_image(47), **fields))
        assert resp.status_code == 202, resp.text
        doc = resp.json()
        assert doc["status"] == "failed" and doc["error"]["code"] == "quota_exceeded", doc
        assert wait_done(c, doc["job_id"])["error"]["code"] == "quota_exceeded"
    ok = wait_done(c, c.post("/v1/jobs", json=job(make_image(48), max_output_tokens=100))
                   .json()["job_id"])  # fmt: skip
    assert ok["status"] == "succeeded"
    assert api_stack.sim.stats()["admitted_requests"] == calls + 1


def test_a_monthly_budget_and_the_usage_table(api_stack: ApiStack) -> None:
    api_stack.key("monthly", "--monthly-budget-usd", "0.003")
    c = api_stack.client("monthly")
    first = c.post("/v1/jobs", json=job(make_image(49), priority="bulk", job_id="mo-1"))
    assert first.json()["status"] == "queued"  # $0.002638 reserved of $0.003
    second = c.post("/v1/jobs", json=job(make_image(50), priority="bulk"))
    assert second.json()["error"]["code"] == "budget_exceeded"
    assert "monthly budget" in second.json()["error"]["message"]
    table = imgq(api_stack.env, "keys", "usage")
    row = next(line for line in table.stdout.splitlines() if api_stack.ids["monthly"] in line)
    assert "0.0026" in row and "$0.003/monthly" in row
    assert c.delete("/v1/jobs/mo-1").status_code == 200
    assert _usage(api_stack, "monthly")["month_usd"] == 0.0


def test_a_job_the_worker_fails_without_a_call_gets_its_estimate_back(api_stack: ApiStack) -> None:
    api_stack.key("refund-worker", "--daily-budget-usd", "1")
    c = api_stack.client("refund-worker")
    png = make_image(51, size=(300, 200))
    # Cut in half: passes the submit-time sniffing, fails to decode in the worker (no call).
    resp = c.post("/v1/jobs", json=job(png[: len(png) // 2]))
    assert resp.json()["status"] == "queued", resp.text
    done = wait_done(c, resp.json()["job_id"])
    assert done["status"] == "failed" and done["error"]["code"] == "invalid_image"
    deadline = time.monotonic() + 10
    while _usage(api_stack, "refund-worker")["day_usd"] != 0.0:
        assert time.monotonic() < deadline, _usage(api_stack, "refund-worker")
        time.sleep(0.2)
