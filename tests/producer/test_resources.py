"""Issue 10's worker probes through a real `imgq worker` process: each ends in bounded use or a
clear error. A local aiohttp server (in the test's loop) serves slow images and a PNG bomb.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from benchmarks.resources import real_png_bomb
from shared.settings import Settings
from tests.local_http import ApiFactory, serve_app
from tests.pipeline.conftest import make_image
from tests.producer.conftest import Stack
from tests.producer.test_api import PROMPT, post_json, wait_doc

SLOW_SECONDS = 0.5


class Served:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.hits: dict[str, int] = {}
        self.bomb = real_png_bomb()


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Served]]:
    state = Served()

    async def slow(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        state.hits[name] = state.hits.get(name, 0) + 1
        state.now += 1
        state.peak = max(state.peak, state.now)
        try:
            await asyncio.sleep(SLOW_SECONDS)
        finally:
            state.now -= 1
        return web.Response(body=make_image(len(name)), content_type="image/png")

    async def fast(request: web.Request) -> web.Response:
        return web.Response(body=make_image(7), content_type="image/png")

    async def bomb(request: web.Request) -> web.Response:
        return web.Response(body=state.bomb, content_type="image/png")

    app = web.Application()
    app.router.add_get("/slow/{name}", slow)
    app.router.add_get("/fast.png", fast)
    app.router.add_get("/bomb.png", bomb)
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}", state


@pytest.fixture
async def api(stack: Stack, api_factory: ApiFactory) -> TestClient:  # type: ignore[type-arg]
    return await api_factory(Settings(redis_url=stack.redis_url, api_auth="off"))  # type: ignore[no-any-return]


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
async def test_a_60_url_job_holds_its_share_and_others_still_fetch(
    api: TestClient,  # type: ignore[type-arg]
    served: tuple[str, Served],
) -> None:
    base, state = served
    urls = [f"{base}/slow/a{i}.png" for i in range(60)]
    status, big = await post_json(api, {"images": urls, "prompt": PROMPT})
    assert status == 202, big
    await asyncio.sleep(1.0)  # the big job is fetching
    started = time.monotonic()
    _, small = await post_json(api, {"images": [f"{base}/fast.png"], "prompt": PROMPT})
    done_small = await wait_doc(api, small["job_id"])
    small_seconds = time.monotonic() - started
    assert done_small["status"] == "succeeded", done_small
    big_now = await (await api.get(f"/v1/jobs/{big['job_id']}")).json()
    assert big_now["status"] in ("queued", "running"), big_now  # still loading its 60 images
    done_big = await wait_doc(api, big["job_id"])
    assert done_big["status"] == "succeeded", done_big
    # One job never holds more than image_loads_per_job (4) fetches: 60 x 0.5 s took >= 7.5 s.
    assert state.peak <= Settings().image_loads_per_job, state.peak
    assert small_seconds < 10, small_seconds


@pytest.mark.slow
async def test_a_repeated_reference_is_fetched_once(
    api: TestClient,  # type: ignore[type-arg]
    served: tuple[str, Served],
) -> None:
    base, state = served
    url = f"{base}/slow/repeated.png"
    _, doc = await post_json(api, {"images": [url] * 40, "prompt": PROMPT})
    done = await wait_doc(api, doc["job_id"])
    assert done["status"] == "succeeded", done
    assert state.hits["repeated.png"] == 1


@pytest.mark.slow
async def test_png_bomb_fails_fast_and_the_worker_stays_small(
    api: TestClient,  # type: ignore[type-arg]
    served: tuple[str, Served],
    stack: Stack,
) -> None:
    base, _ = served
    started = time.monotonic()
    ids = []
    for _ in range(5):  # five bombs at once: none is decoded
        _, doc = await post_json(api, {"images": [f"{base}/bomb.png"], "prompt": PROMPT})
        ids.append(doc["job_id"])
    docs = [await wait_doc(api, j) for j in ids]
    for d in docs:
        assert d["status"] == "failed", d
        assert d["error"]["code"] == "image_too_large"
        assert "10950x10950" in d["error"]["message"]
    assert time.monotonic() - started < 10
    # Decoding one would take ~500 MB of pixels; the worker (-c 8) peaks well below that.
    assert _peak_rss_mib(stack.worker.pid) < 400
    _, ok = await post_json(api, {"images": [f"{base}/fast.png"], "prompt": PROMPT})
    assert (await wait_doc(api, ok["job_id"]))["status"] == "succeeded"
