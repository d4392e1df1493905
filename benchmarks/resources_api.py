"""Parts of ``benchmarks.resources``: many ``?wait`` callers on one API process, and Redis sizing.

Both run real processes: the API is ``python -m imgq.cli api`` on its own port; jobs are queued
records written through the real stores, finished with the real store + event publisher (what a
worker does at the end of a job), so no worker has to run.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from typing import Any

import aiohttp
import redis
import redis.asyncio as aioredis
from PIL import Image

from benchmarks.common import ROOT, bench_env, median, percentile, stop_process
from shared.embedded_redis import EmbeddedRedis, free_port, wait_for_port
from shared.jobs import Result
from shared.settings import Settings
from shared.storage import RedisJobEvents, RedisResultStore

BENCH_NAME = "imgq-bench"  # the benchmark's own Redis connections carry this name


def _others(clients: list[dict[str, Any]]) -> int:
    return sum(1 for c in clients if c.get("name") != BENCH_NAME)


async def _waiters(redis_url: str, port: int, callers: int, wait: float) -> dict[str, float]:
    r = aioredis.from_url(redis_url)
    await r.client_setname(BENCH_NAME)
    store = RedisResultStore(r, ttl_seconds=3600)
    events = RedisJobEvents(r)
    ids = [f"wait-{i}" for i in range(callers)]
    for j in ids:
        await store.create(Result(job_id=j))
    answered: dict[str, float] = {}
    statuses: list[int] = []
    docs: list[str] = []
    base = f"http://127.0.0.1:{port}"
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=wait + 30)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as http:

        async def call(job_id: str) -> None:
            async with http.get(f"{base}/v1/jobs/{job_id}", params={"wait": f"{wait:g}"}) as resp:
                statuses.append(resp.status)
                body = await resp.json()
                docs.append(str(body.get("status") or body.get("error", {}).get("code")))
            answered[job_id] = time.monotonic()

        tasks = [asyncio.create_task(call(j)) for j in ids]
        peak = 0
        for _ in range(10):  # let every caller connect and start waiting; sample connections
            await asyncio.sleep(0.5)
            peak = max(peak, _others(await r.client_list()))
        early = len(answered)
        finished_at: dict[str, float] = {}
        for j in ids:
            await store.put(Result(job_id=j, status="succeeded", output_text="ok"))
            finished_at[j] = time.monotonic()
            await events.publish(j, "succeeded")
        sampler_stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not sampler_stop.is_set():
                peak = max(peak, _others(await r.client_list()))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*tasks, return_exceptions=True)
        sampler_stop.set()
        await sampler
    await r.aclose()
    lat = [answered[j] - finished_at[j] for j in ids if j in answered and j in finished_at]
    return {
        "callers": callers,
        "wait_s": wait,
        "ok": sum(1 for s, d in zip(statuses, docs, strict=True) if s == 200 and d == "succeeded"),
        "errors": sum(1 for s in statuses if s != 200) + (callers - len(statuses)),
        "answered_before_finish": early,
        "peak_redis_connections": peak,
        "latency_p50_ms": median(lat) * 1000,
        "latency_p99_ms": percentile(lat, 99) * 1000,
    }


def run_waiters(callers: int, wait: float) -> dict[str, float]:
    """``callers`` concurrent ``GET /v1/jobs/<id>?wait=<wait>`` on one API process."""
    with EmbeddedRedis() as server:
        port = free_port()
        # Open mode (one tenant): the figure is about connections, not keys.
        env = bench_env(IMGQ_REDIS_URL=server.url, IMGQ_LOG_LEVEL="WARNING", IMGQ_API_AUTH="off")
        cmd = [sys.executable, "-m", "imgq.cli", "api", "--port", str(port), "-l", "WARNING"]
        api = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port("127.0.0.1", port, timeout=30)
            return asyncio.run(_waiters(server.url, port, callers, wait))
        finally:
            stop_process(api)


# -- Redis memory per queued job ------------------------------------------------------------------
def _jpeg(i: int, size: tuple[int, int]) -> bytes:
    im = Image.effect_noise(size, 40 + i % 50).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _used(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])  # type: ignore[index]


def run_sizing(jobs: int) -> dict[str, float]:
    """Redis ``used_memory`` per queued job (no worker), for URL images and for uploads."""
    from producer.client import Client, SubmitRequest

    row: dict[str, float] = {"jobs": jobs}
    with EmbeddedRedis() as server:
        r = redis.Redis.from_url(server.url)
        with Client(Settings(redis_url=server.url)) as c:
            c.submit_many([SubmitRequest(images=["https://example.com/warm.png"], prompt="x")])
            before = _used(r)
            c.submit_many(
                SubmitRequest(
                    images=[f"https://images.example.com/photos/{i:08d}.jpg"],
                    prompt="Describe this image in one sentence.",
                    metadata={"order": i, "source": "benchmark"},
                )
                for i in range(jobs)
            )
            row["url_job_bytes"] = (_used(r) - before) / jobs
            before = _used(r)
            long_prompt = ("Describe every object in this image, with its colour. " * 300)[:16384]
            c.submit_many(
                SubmitRequest(
                    images=[f"https://images.example.com/p/{i:08d}.jpg"], prompt=long_prompt
                )
                for i in range(jobs)
            )
            row["prompt_16k_job_bytes"] = (_used(r) - before) / jobs
            uploads = [_jpeg(i, (320, 240)) for i in range(jobs)]
            row["upload_image_bytes"] = sum(len(u) for u in uploads) / jobs
            before = _used(r)
            c.submit_many(
                SubmitRequest(images=[u], prompt="Describe this image in one sentence.")
                for u in uploads
            )
            row["upload_job_bytes"] = (_used(r) - before) / jobs
        queue = r.lindex("interactive", 0) or b""
        result_key = next(iter(r.scan_iter("imgq:result:*", count=1000)), None)
        row["message_bytes"] = len(queue)
        row["record_bytes"] = float(r.strlen(result_key)) if result_key else float("nan")
        row["keys"] = r.dbsize()
        r.close()
    return row


# -- which keys imgq leaves in Redis, and whether each expires ----------------------------------
def _family(key: str) -> str:
    """``imgq:result:abc`` -> ``imgq:result:*``; kombu/celery keys keep their fixed names."""
    parts = key.split(":")
    if key.startswith("imgq:") and len(parts) > 2:
        return ":".join(parts[:2]) + ":*"
    if key.startswith("_kombu.binding."):
        return "_kombu.binding.*"
    return key


def audit_keys(redis_url: str) -> list[dict[str, Any]]:
    """Every key family in the database: how many keys, how many without a TTL, largest size."""
    r = redis.Redis.from_url(redis_url)
    families: dict[str, dict[str, Any]] = {}
    for raw in r.scan_iter(count=1000):
        key = raw.decode()
        fam = families.setdefault(
            _family(key), {"family": _family(key), "keys": 0, "no_ttl": 0, "type": "", "max": 0}
        )
        fam["keys"] += 1
        fam["no_ttl"] += r.ttl(key) == -1
        kind = str(r.type(key).decode())  # type: ignore[union-attr]
        fam["type"] = kind
        size = {
            "string": r.strlen,
            "list": r.llen,
            "hash": r.hlen,
            "set": r.scard,
            "zset": r.zcard,
        }.get(kind, lambda _k: 0)(key)
        fam["max"] = max(fam["max"], int(size))
    r.close()
    return sorted(families.values(), key=lambda f: str(f["family"]))
