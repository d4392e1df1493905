"""The estimate equals what the (real, over-HTTP) simulator bills, for random sizes/details/models.

Each prepared image goes to the simulator as a data URL; the simulator decodes what it received,
answers ``IMAGE sha256=<16hex> size=<W>x<H> tokens=<N>`` and reports ``usage.prompt_tokens``.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

import openai
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.images import image_content_hash, prepare_image
from shared.text_tokens import prompt_tokens
from shared.vision_tokens import Detail, image_tokens, vision_models
from tests.images import samples as s

if TYPE_CHECKING:
    from tests.conftest import Sim

PROMPT = "Describe this image in one line."
_LINE = re.compile(r"IMAGE sha256=([0-9a-f]{16}) size=(\d+)x(\d+) tokens=(\d+)")
DETAILS: list[Detail] = ["low", "high", "auto"]


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    model=st.sampled_from(vision_models()),
    detail=st.sampled_from(DETAILS),
    w=st.integers(min_value=1, max_value=3000),
    h=st.integers(min_value=1, max_value=3000),
    budget=st.one_of(st.none(), st.integers(min_value=300, max_value=3000)),
    fmt=st.sampled_from(["JPEG", "PNG"]),
)
def test_estimate_equals_simulator_billing(
    simulator: Sim, model: str, detail: Detail, w: int, h: int, budget: int | None, fmt: str
) -> None:
    assume(budget is None or budget >= image_tokens(model, 1, 1, "low"))  # else: ImageTooLarge
    p = prepare_image(
        s.encode(s.photo((w, h)), fmt), model=model, detail=detail, max_image_tokens=budget
    )
    if budget is None:
        assert p.tokens == image_tokens(model, w, h, detail)
    else:
        assert p.tokens <= budget
    client = openai.OpenAI(base_url=simulator.base_url, api_key="sk-test", max_retries=0)
    try:
        resp = client.chat.completions.create(
            model=model,
            max_tokens=50,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": PROMPT},
                        {
                            "type": "image_url",
                            "image_url": {"url": p.data_url(), "detail": p.detail},
                        },
                    ],
                }
            ],
        )
    finally:
        client.close()
    text = resp.choices[0].message.content or ""
    m = _LINE.search(text)
    assert m is not None, text
    sha16, sw, sh, billed = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
    assert sha16 == image_content_hash(p)[:16] == hashlib.sha256(p.data).hexdigest()[:16]
    assert (sw, sh) == (p.width, p.height)
    assert billed == p.tokens
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == prompt_tokens([PROMPT], [p.tokens])
