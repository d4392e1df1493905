"""Pipeline fixtures: real `imgq worker` processes against a real Redis and the simulator."""

from __future__ import annotations

import hashlib
import io

from PIL import Image

from shared.images import prepare_image

# Re-exported for the tests that import them from here; the `worker_factory` fixture is in
# tests/conftest.py.
from tests.procs import WorkerFactory as WorkerFactory
from tests.procs import wait_for_worker as wait_for_worker
from tests.procs import worker_env as worker_env


def make_image(seed: int, size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> bytes:
    """A small distinct image per seed."""
    colour = ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256)
    im = Image.new("RGB", size, colour)
    im.putpixel((seed % size[0], 0), (255 - colour[0], 0, 0))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def sent_hash(data: bytes, model: str = "gpt-4.1-mini", detail: str = "auto") -> str:
    """What the simulator reports for an image imgq prepared: sha256[:16] of the bytes sent."""
    prepared = prepare_image(data, model=model, detail=detail)  # type: ignore[arg-type]
    return hashlib.sha256(prepared.data).hexdigest()[:16]
