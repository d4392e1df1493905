"""Property tests: resizing to what the model sees never changes the token count, only bytes."""

from __future__ import annotations

import doctest
import importlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from shared.errors import ImageTooLargeError
from shared.images import prepare_image, target_size
from shared.vision_tokens import Detail, image_tokens, vision_models
from tests.images import samples as s

MODELS = vision_models()
DETAILS: list[Detail] = ["low", "high", "auto"]
sides = st.integers(min_value=1, max_value=20000)


@settings(max_examples=3000, deadline=None)
@given(model=st.sampled_from(MODELS), detail=st.sampled_from(DETAILS), w=sides, h=sides)
def test_target_size_keeps_tokens(model: str, detail: Detail, w: int, h: int) -> None:
    tw, th, used = target_size(model, w, h, detail)
    assert used == detail and tw <= w and th <= h
    assert image_tokens(model, tw, th, used) == image_tokens(model, w, h, detail)
    # Idempotent: the model would not shrink the sent image again.
    assert target_size(model, tw, th, detail)[:2] == (tw, th)


@settings(max_examples=1500, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    detail=st.sampled_from(DETAILS),
    w=sides,
    h=sides,
    budget=st.integers(min_value=1, max_value=6000),
)
def test_budget_respected(model: str, detail: Detail, w: int, h: int, budget: int) -> None:
    try:
        tw, th, used = target_size(model, w, h, detail, max_image_tokens=budget)
    except ImageTooLargeError:
        assert image_tokens(model, 1, 1, "low") > budget
        return
    cost = image_tokens(model, tw, th, used)
    assert cost <= budget and tw <= w and th <= h
    full = image_tokens(model, w, h, detail)
    if full <= budget:
        assert (used, cost) == (detail, full)  # no needless shrinking


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODELS),
    detail=st.sampled_from(DETAILS),
    w=st.integers(min_value=1, max_value=3200),
    h=st.integers(min_value=1, max_value=3200),
    fmt=st.sampled_from(["JPEG", "PNG"]),
)
def test_prepare_image_keeps_tokens(model: str, detail: Detail, w: int, h: int, fmt: str) -> None:
    data = s.encode(s.photo((w, h)), fmt)
    p = prepare_image(data, model=model, detail=detail)
    assert p.tokens == image_tokens(model, w, h, detail)
    assert p.tokens == image_tokens(model, p.width, p.height, p.detail)
    assert (p.width, p.height) == target_size(model, w, h, detail)[:2]
    with Image.open(io.BytesIO(p.data)) as im:
        assert im.size == (p.width, p.height)


@pytest.mark.parametrize(
    "module",
    [
        "shared.images.formats",
        "shared.images.policy",
        "shared.images.resize",
        "shared.images.prepare",
        "shared.images.sources",
        "shared.images.fetch",
        "shared.images.hashing",
        "shared.catalogue",
    ],
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0


def test_safe_in_thread_and_process_pools() -> None:
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from functools import partial

    from shared.errors import InvalidImageError

    inputs = [s.encode(s.photo((900 + 50 * i, 700)), "JPEG") for i in range(6)]
    run = partial(prepare_image, model="gpt-4o", detail="high")
    expected = [run(d) for d in inputs]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(run, inputs)) == expected  # deterministic, no shared state
    with ProcessPoolExecutor(2) as pool:
        assert list(pool.map(run, inputs[:2])) == expected[:2]  # results pickle
        with pytest.raises(InvalidImageError, match="empty"):  # typed errors survive pickling
            pool.submit(run, b"").result()


def test_unknown_model_is_a_job_error() -> None:
    from shared.errors import InvalidJobError

    with pytest.raises(InvalidJobError, match="llama"):
        prepare_image(s.encode(s.photo((10, 10)), "PNG"), model="llama-3", detail="auto")
