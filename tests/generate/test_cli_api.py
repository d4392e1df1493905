"""`imgq generate` / `imgq edit` / `imgq result --out` and the HTTP API's generation routes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from producer.api import create_app
from shared.settings import Settings
from tests.conftest import ROOT, Sim
from tests.generate.conftest import decode, fast_sim_args, mask_png, picture
from tests.pipeline.conftest import WorkerFactory, worker_env


@pytest.fixture
def gen_sim(simulator_factory: Callable[..., Sim]) -> Sim:
    return simulator_factory(*fast_sim_args())


def imgq(redis_url: str, sim: Sim, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgq.cli", *args], cwd=ROOT, env=worker_env(redis_url, sim),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_generate_edit_and_result_out(
    redis_url: str, gen_sim: Sim, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    worker_factory(gen_sim, concurrency=4)
    gen = imgq(redis_url, gen_sim, "generate", "a boat", "--n", "2", "--size", "1024x1024",
               "--quality", "low", "--out", str(tmp_path / "gen"))  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    paths = [Path(p) for p in gen.stdout.split()]
    assert len(paths) == 2
    for p in paths:
        img = decode(p.read_bytes())
        assert (img.format, img.size, p.suffix) == ("PNG", (1024, 1024), ".png")
    job_id = paths[0].name.rsplit("-", 1)[0]
    again = imgq(redis_url, gen_sim, "result", job_id, "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert [Path(p).read_bytes() for p in again.stdout.split()] == [p.read_bytes() for p in paths]

    (tmp_path / "in.png").write_bytes(picture(64, 48))
    (tmp_path / "mask.png").write_bytes(mask_png(64, 48))
    (tmp_path / "small.png").write_bytes(mask_png(32, 32))
    edit = imgq(redis_url, gen_sim, "edit", str(tmp_path / "in.png"), "--prompt", "add a hat",
                "--mask", str(tmp_path / "mask.png"), "--format", "webp", "--quality", "low",
                "--out", str(tmp_path / "edit"))  # fmt: skip
    assert edit.returncode == 0, edit.stderr
    (out,) = edit.stdout.split()
    assert decode(Path(out).read_bytes()).format == "WEBP"
    refused = imgq(redis_url, gen_sim, "edit", str(tmp_path / "in.png"), "--prompt", "a hat",
                   "--mask", str(tmp_path / "small.png"))  # fmt: skip
    assert refused.returncode == 1 and "invalid_image" in refused.stderr
    assert "does not match image size 64x48" in refused.stderr


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = create_app(Settings(redis_url=redis_url, api_auth="off"))  # issue 11: no keys here
    client: TestClient = TestClient(TestServer(app))  # type: ignore[type-arg]
    await client.start_server()
    yield client
    await client.close()


async def test_http_generation_and_multipart_edit(
    api: TestClient,
    gen_sim: Sim,
    worker_factory: WorkerFactory,  # type: ignore[type-arg]
) -> None:
    worker_factory(gen_sim, concurrency=4)
    resp = await api.post("/v1/images/generations", json={
        "prompt": "a kite", "n": 1, "size": "1536x1024", "quality": "low", "metadata": {"a": 1},
    })  # fmt: skip
    assert resp.status == 202
    gen_id = (await resp.json())["job_id"]

    form = aiohttp.FormData()
    form.add_field("image", picture(64, 48), filename="a.png", content_type="image/png")
    form.add_field("mask", mask_png(64, 48), filename="m.png", content_type="image/png")
    for k, v in {"prompt": "add a hat", "quality": "low", "output_format": "jpeg"}.items():
        form.add_field(k, v)
    resp = await api.post("/v1/images/edits", data=form)
    assert resp.status == 202
    edit_id = (await resp.json())["job_id"]

    expected = {gen_id: ("PNG", (1536, 1024)), edit_id: ("JPEG", (1024, 1024))}
    for job_id, (fmt, size) in expected.items():
        doc: Any = await (await api.get(f"/v1/jobs/{job_id}?wait=60")).json()
        assert doc["status"] == "succeeded", doc["error"]
        img_resp = await api.get(f"/v1/jobs/{job_id}/images/0")
        assert img_resp.status == 200
        img = decode(await img_resp.read())
        assert (img.format, img.size) == (fmt, size)
        assert img_resp.content_type == f"image/{fmt.lower()}"
    assert (await api.get(f"/v1/jobs/{gen_id}/images/5")).status == 404

    form = aiohttp.FormData()
    form.add_field("image", picture(64, 48), filename="a.png", content_type="image/png")
    form.add_field("mask", mask_png(32, 32), filename="m.png", content_type="image/png")
    form.add_field("prompt", "add a hat")
    refused = await (await api.post("/v1/images/edits", data=form)).json()
    assert refused["status"] == "failed" and refused["error"]["code"] == "invalid_image"
    bad = await api.post(
        "/v1/images/generations", json={"prompt": "x", "model": "dall-e-3", "n": 2}
    )
    doc = await bad.json()
    assert doc["status"] == "failed" and doc["error"]["code"] == "invalid_job"
    unknown = await api.post("/v1/images/generations", json={"prompt": "x", "colour": "red"})
    assert unknown.status == 400
    # The two accepted jobs are counted like vision jobs; the refused ones are not.
    text = await (await api.get("/metrics")).text()
    submitted = [
        line for line in text.splitlines() if line.startswith("imgq_jobs_submitted_total{")
    ]
    assert submitted == [
        'imgq_jobs_submitted_total{model="gpt-image-1",priority="interactive"} 2.0'
    ], submitted
