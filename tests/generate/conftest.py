"""Fixtures for image generation: a simulator with the Images API, tiny input images."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.conftest import Sim, start_simulator, stop_simulator

KEY = "sk-test-0123456789"


def fast_sim_args(ipm: int = 100_000) -> list[str]:
    return ["--latency-ms", "0", "--jitter-ms", "0", "--tpm", "100000000", "--rpm", "1000000",
            "--ipm", str(ipm), "--seed", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def images_sim() -> Iterator[Sim]:
    """No latency, limits far above anything these tests send."""
    sim = start_simulator(*fast_sim_args())
    yield sim
    stop_simulator(sim)


def picture(w: int = 64, h: int = 48, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    colour: tuple[int, ...] = (200, 60, 30) if mode == "RGB" else (200, 60, 30, 255)
    img = Image.new(mode, (w, h), colour)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def mask_png(w: int = 64, h: int = 48, alpha: bool = True) -> bytes:
    """A mask whose left half is fully transparent (the area to edit)."""
    img = Image.new("RGBA" if alpha else "RGB", (w, h), (0, 0, 0, 255) if alpha else (0, 0, 0))
    if alpha:
        for x in range(w // 2):
            for y in range(h):
                img.putpixel((x, y), (0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img
