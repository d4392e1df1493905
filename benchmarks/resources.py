"""Bounded resources (issue 10): worker memory under a hostile mix, many waiters, a soak, sizing.

    python -m benchmarks.resources [--quick] [--only rss,waiters,soak,sizing] [--no-write]

- rss: one ``imgq worker -c 256`` (default limits) runs normal jobs, PNG bombs (10950x10950,
  fetched by URL so they reach the worker), 60-URL jobs of ~20 MB images from a slow local server,
  and 1 MiB prompts, all at once; its peak RSS (VmHWM) against a 1.5 GiB target.
- waiters: 1,000 concurrent ``?wait=30`` callers on one API process; Redis connections it holds.
- soak: 10,000 one-image jobs through 2 workers; each worker's RSS after warm-up and at the end.
- sizing: Redis ``used_memory`` per queued job (README "Sizing Redis").
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import struct
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

from benchmarks.common import (
    DEFAULT_OUTPUT,
    HUGE_RPM,
    HUGE_TPM,
    ROOT,
    Simulator,
    fast_simulator_flags,
    machine_summary,
    start_imgq_worker,
    stop_process,
    wait_for_redis_key,
    write_section,
)
from benchmarks.resources_api import audit_keys, run_sizing, run_waiters
from producer.client import Client, SubmitRequest
from shared.embedded_redis import EmbeddedRedis, free_port
from shared.settings import Settings

MIB = 1024 * 1024
LIMITS = json.dumps({"gpt-4.1-mini": {"tpm": HUGE_TPM, "rpm": HUGE_RPM}})
PROMPT = "Describe this image in one sentence."


def _status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _photo(i: int, size: tuple[int, int]) -> bytes:
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    im.putpixel((i % size[0], 0), (i % 256, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def real_png_bomb(side: int = 10950) -> bytes:
    """A complete, valid all-black RGB PNG of side x side (~350 KB for 10950: issue 10's probe)."""
    row = b"\x00" * (1 + side * 3)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


class ImageServer:
    """Slow local images on 127.0.0.1 (its own loop thread): /big/<n>.png, /bomb/<n>.png."""

    def __init__(self, delay: float) -> None:
        self.port = free_port()
        self.delay = delay
        noise = Image.effect_noise((2600, 2600), 80).convert("RGB")
        buf = io.BytesIO()
        noise.save(buf, "PNG", compress_level=1)
        self.big = buf.getvalue()  # ~20 MB: the per-image limit
        self.bomb = real_png_bomb()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(30)

    def _serve(self) -> None:
        async def big(request: web.Request) -> web.Response:
            await asyncio.sleep(self.delay)
            return web.Response(body=self.big, content_type="image/png")

        async def bomb(request: web.Request) -> web.Response:
            return web.Response(body=self.bomb, content_type="image/png")

        app = web.Application()
        app.router.add_get("/big/{n}", big)
        app.router.add_get("/bomb/{n}", bomb)
        runner = web.AppRunner(app)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


def run_rss(normal: int, bombs: int, wide: int, prompts: int) -> dict[str, Any]:
    """Peak RSS of one ``-c 256`` worker under the hostile mix; outcomes per kind of job."""
    images = ImageServer(delay=0.5)
    big_prompt = ("lorem ipsum dolor sit amet " * 40000)[: MIB - 64]
    reqs: list[tuple[str, SubmitRequest]] = []
    for i in range(wide):
        urls = [images.url(f"big/{i}-{k}.png") for k in range(60)]
        reqs.append(("60-URL job (~20 MB each)", SubmitRequest(images=urls, prompt=PROMPT)))
    for i in range(bombs):
        reqs.append(
            ("PNG bomb", SubmitRequest(images=[images.url(f"bomb/{i}.png")], prompt=PROMPT))
        )
    for i in range(prompts):
        img = _photo(10_000 + i, (800, 600))
        reqs.append(("1 MiB prompt", SubmitRequest(images=[img], prompt=big_prompt, dedup=False)))
    for _ in range(5):  # refused at submit, and the same image asked twice (dedup)
        reqs.append(("not an image", SubmitRequest(images=[b"not an image"], prompt=PROMPT)))
        reqs.append(
            ("same image twice", SubmitRequest(images=[_photo(0, (64, 48))], prompt=PROMPT))
        )
    for i in range(normal):
        img = _photo(i, (1600, 1200))
        reqs.append(("normal", SubmitRequest(images=[img], prompt=PROMPT, dedup=False)))
    with EmbeddedRedis() as redis, Simulator(*fast_simulator_flags(1000)) as sim:
        worker = start_imgq_worker(
            redis.url, sim, concurrency=256, name="rss", IMGQ_MODEL_LIMITS=LIMITS,
            IMGQ_FETCH_ALLOW_HOSTS='["127.0.0.1"]',
        )  # fmt: skip
        try:
            idle = _status(worker.pid, "VmRSS")
            started = time.monotonic()
            with Client(Settings(redis_url=redis.url)) as c:
                ids = c.submit_many(r for _, r in reqs)
                kinds = dict(zip(ids, (k for k, _ in reqs), strict=True))
                results = list(c.as_completed(ids, timeout=1200))
            wall = time.monotonic() - started
            peak = _status(worker.pid, "VmHWM")
            alive = worker.poll() is None
            keys = audit_keys(redis.url)
        finally:
            stop_process(worker)
    outcomes: dict[str, Counter[str]] = {}
    for r in results:
        label = (
            r.status if r.status == "succeeded" else f"failed {r.error.code if r.error else '?'}"
        )
        outcomes.setdefault(kinds[r.job_id], Counter())[label] += 1
    return {"idle_mib": idle, "peak_mib": peak, "alive": alive, "wall_s": wall,
            "outcomes": outcomes, "jobs": len(reqs), "normal": normal, "keys": keys}  # fmt: skip


def run_soak(jobs: int, warmup: int) -> dict[str, Any]:
    """``jobs`` one-image jobs through 2 workers; RSS after ``warmup`` finished and at the end."""
    with EmbeddedRedis() as redis, Simulator(*fast_simulator_flags(20)) as sim:
        workers = [
            start_imgq_worker(
                redis.url,
                sim,
                concurrency=64,
                name=f"soak{i}",
                wait=False,
                IMGQ_MODEL_LIMITS=LIMITS,
            )
            for i in range(2)
        ]
        try:
            wait_for_redis_key(redis.url, "_kombu.binding.interactive")
            started = time.monotonic()
            after_warmup: list[float] = []
            ok = 0
            with Client(Settings(redis_url=redis.url)) as c:
                ids = c.submit_many(
                    SubmitRequest(images=[_photo(i, (96, 64))], prompt=PROMPT, dedup=False)
                    for i in range(jobs)
                )
                for n, r in enumerate(c.as_completed(ids, timeout=3600), start=1):
                    ok += r.status == "succeeded"
                    if n == warmup:
                        after_warmup = [_status(w.pid, "VmRSS") for w in workers]
            end = [_status(w.pid, "VmRSS") for w in workers]
            wall = time.monotonic() - started
        finally:
            for w in workers:
                stop_process(w)
    growth = [(e - a) / a * 100 for a, e in zip(after_warmup, end, strict=True)]
    return {"jobs": jobs, "warmup": warmup, "ok": ok, "wall_s": wall,
            "after_warmup": after_warmup, "end": end, "growth_pct": growth}  # fmt: skip


_SAVED = ROOT / ".cache" / "bench_resources.json"


def _load_saved() -> dict[str, Any]:
    try:
        saved: dict[str, Any] = json.loads(_SAVED.read_text())
    except (OSError, ValueError):
        return {}
    return saved


def report(rows: dict[str, Any], command: str) -> str:
    from benchmarks.resources_report import render

    return render(rows, command, machine_summary())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="bounded resources: worker RSS, waiters, soak")
    ap.add_argument("--quick", action="store_true", help="smaller mix, 300 waiters, 2,000 jobs")
    ap.add_argument("--only", default="rss,waiters,soak,sizing")
    ap.add_argument("--soak-jobs", type=int, default=None)
    ap.add_argument("--output", "--out", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    q = args.quick
    rows: dict[str, Any] = {}
    if "rss" in parts:
        rows["rss"] = run_rss(normal=100 if q else 400, bombs=10 if q else 20,
                              wide=1 if q else 8, prompts=10 if q else 20)  # fmt: skip
        print(rows["rss"], flush=True)
    if "waiters" in parts:
        rows["waiters"] = run_waiters(300 if q else 1000, 30.0)
        print(rows["waiters"], flush=True)
    if "soak" in parts:
        n = args.soak_jobs or (2000 if q else 10_000)
        rows["soak"] = run_soak(n, warmup=max(200, n // 10))
        print(rows["soak"], flush=True)
    if "sizing" in parts:
        rows["sizing"] = run_sizing(500 if q else 2000)
        print(rows["sizing"], flush=True)
    command = "python -m benchmarks.resources" + (" --quick" if q else "")
    if args.only != ap.get_default("only"):
        command += f" --only {args.only}"
    if args.soak_jobs:
        command += f" --soak-jobs {args.soak_jobs}"
    for row in rows.values():
        row["command"] = command
    # A partial run (--only) keeps the other parts' last figures, each with its own command.
    saved = _load_saved() if args.only != ap.get_default("only") else {}
    rows = {**saved, **rows}
    _SAVED.parent.mkdir(parents=True, exist_ok=True)
    _SAVED.write_text(json.dumps(rows, default=dict))
    text = report(rows, "python -m benchmarks.resources")
    print(text)
    if not args.no_write:
        write_section("resources", text, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
