"""Budgets and quotas on image generation and edits (issue 11), over real HTTP with a real
worker and the simulator: reserved at submit (an upper bound), settled with the bill."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from tests.api.conftest import ApiStack, imgq, wait_done
from tests.generate.conftest import mask_png, picture

# gpt-image-1, n=2, quality low, size unset ("auto"): reserved as the costliest size (2 x 408
# output tokens) plus the prompt with its message framing (10 tokens); the simulator draws
# 1024x1024 (2 x 272) and bills the prompt's 4 tokens.
FOX = {"prompt": "a lighthouse at dusk", "model": "gpt-image-1", "n": 2, "quality": "low"}
FOX_RESERVED = (2 * 408 * 40 + 10 * 5) / 1e6  # $0.03269
FOX_BILLED = (2 * 272 * 40 + 4 * 5) / 1e6  # $0.02178
KITE = {"prompt": "a kite", "model": "dall-e-3", "size": "1024x1024"}  # $0.04 per image


def _usage(stack: ApiStack, name: str) -> dict[str, Any]:
    out = imgq(stack.env, "keys", "usage", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    row: dict[str, Any] = next(r for r in rows if r["id"] == stack.ids[name])
    return row


def _billed_metric(stack: ApiStack, tenant: str) -> float:
    text = requests.get(stack.metrics_url, timeout=30).text
    prefix = f'imgq_tenant_spend_usd{{period="billed",tenant="{tenant}"}}'
    return float(next(x for x in text.splitlines() if x.startswith(prefix)).split()[-1])


def _settled(stack: ApiStack, name: str, expected: float) -> dict[str, Any]:
    """The key's usage once the worker settled (it does so right after the result is written)."""
    deadline = time.monotonic() + 10
    while (usage := _usage(stack, name))["day_usd"] != pytest.approx(expected, abs=1e-6):
        assert time.monotonic() < deadline, usage
        time.sleep(0.2)
    return usage


def test_a_budgeted_key_generating_and_editing_is_charged_the_billed_cost(
    api_stack: ApiStack,
) -> None:
    api_stack.key("img-billed", "--daily-budget-usd", "1")
    c = api_stack.client("img-billed")
    gen = c.post("/v1/images/generations", json={**FOX, "job_id": "gen"})
    assert gen.status_code == 202 and gen.json()["status"] == "queued", gen.text
    edit = c.post(
        "/v1/images/edits",
        files={"image": ("in.png", picture(64, 48)), "mask": ("mask.png", mask_png(64, 48))},
        data={"prompt": "add a hat", "size": "1024x1024", "quality": "low", "job_id": "edit"},
    )
    assert edit.status_code == 202 and edit.json()["status"] == "queued", edit.text
    done = [wait_done(c, "gen"), wait_done(c, "edit")]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], done
    assert done[0]["cost_usd"] == pytest.approx(FOX_BILLED)
    # The edit: 194 input image tokens for 64x48, the prompt's 3, 272 output tokens.
    assert done[1]["cost_usd"] == pytest.approx((272 * 40 + 194 * 10 + 3 * 5) / 1e6)
    billed = done[0]["cost_usd"] + done[1]["cost_usd"]
    usage = _settled(api_stack, "img-billed", billed)
    assert usage["month_usd"] == pytest.approx(billed, abs=1e-6)
    assert _billed_metric(api_stack, "img-billed") == pytest.approx(billed, abs=1e-6)


def test_a_budget_running_out_fails_the_rest_with_no_call(api_stack: ApiStack) -> None:
    api_stack.key("img-runs-out", "--daily-budget-usd", "0.10")
    c = api_stack.client("img-runs-out")
    calls = api_stack.sim.stats()["admitted_requests"]
    docs = [
        c.post("/v1/images/generations", json={**KITE, "job_id": f"k-{i}"}).json() for i in range(4)
    ]
    assert [d["status"] for d in docs] == ["queued", "queued", "failed", "failed"], docs
    for doc in docs[2:]:
        assert doc["error"]["code"] == "budget_exceeded", doc
        assert "daily budget of $0.10" in doc["error"]["message"]
    done = [wait_done(c, f"k-{i}") for i in range(2)]
    assert [d["cost_usd"] for d in done] == [pytest.approx(0.04)] * 2
    _settled(api_stack, "img-runs-out", 0.08)
    time.sleep(1.0)  # nothing else may be called for the refused jobs
    assert api_stack.sim.stats()["admitted_requests"] == calls + 2
    assert wait_done(c, "k-3")["error"]["code"] == "budget_exceeded"


def test_the_upper_bound_is_reserved_and_a_cancel_refunds_it(api_stack: ApiStack) -> None:
    api_stack.key("img-cancel", "--daily-budget-usd", "0.05")
    c = api_stack.client("img-cancel")
    # bulk: no worker of this stack takes it, so it stays queued with its reservation.
    held = c.post("/v1/images/generations", json={**FOX, "priority": "bulk", "job_id": "h-1"})
    assert held.json()["status"] == "queued", held.text
    assert _usage(api_stack, "img-cancel")["day_usd"] == pytest.approx(FOX_RESERVED, abs=1e-6)
    second = c.post("/v1/images/generations", json={**FOX, "priority": "bulk", "job_id": "h-2"})
    assert second.json()["error"]["code"] == "budget_exceeded", second.text
    assert c.delete("/v1/jobs/h-1").status_code == 200
    assert _usage(api_stack, "img-cancel")["day_usd"] == 0.0
    again = c.post("/v1/images/generations", json={**FOX, "priority": "bulk", "job_id": "h-3"})
    assert again.json()["status"] == "queued", again.text  # the refund made room
    assert c.delete("/v1/jobs/h-3").status_code == 200
    assert _usage(api_stack, "img-cancel")["day_usd"] == 0.0


def test_a_keys_models_and_priorities_apply_to_image_models(api_stack: ApiStack) -> None:
    api_stack.key("img-narrow", "--models", "dall-e-2", "--priorities", "interactive",
                  "--max-output-tokens", "100", "--daily-budget-usd", "1")  # fmt: skip
    c = api_stack.client("img-narrow")
    calls = api_stack.sim.stats()["admitted_requests"]
    small = {"prompt": "a red dot", "model": "dall-e-2", "size": "256x256"}
    for body in ({**small, "model": "gpt-image-1", "size": "1024x1024"},
                 {**small, "priority": "bulk"}):  # fmt: skip
        resp = c.post("/v1/images/generations", json=body)
        assert resp.status_code == 202, resp.text
        assert resp.json()["error"]["code"] == "quota_exceeded", resp.text
    # max_output_tokens caps a vision job's text answer: an image call is not refused by it.
    ok = wait_done(c, c.post("/v1/images/generations", json=small).json()["job_id"])
    assert ok["status"] == "succeeded" and ok["cost_usd"] == pytest.approx(0.016), ok
    _settled(api_stack, "img-narrow", 0.016)
    assert api_stack.sim.stats()["admitted_requests"] == calls + 1
