"""Rate-limit benchmark: achieved TPM / configured TPM and 429 rate, side by side in one run.

    python -m benchmarks.ratelimit [--quick] [--no-write]

Every scenario gets a fresh simulator with the same limits and the same kind of load (one
distinct 512x512 PNG + a short prompt per call, gpt-4.1-mini, max_tokens 200): more work than the
limit allows, so each approach runs saturated.

* imgq with 1, 2 and 4 ``imgq worker`` processes (the real pipeline: producer -> Redis broker ->
  workers -> the Redis limiter), limits given in ``IMGQ_MODEL_LIMITS``;
* naive: ``asyncio.gather`` under a semaphore of 32, the SDK's default retries;
* cookbook: in-process token bucket on an estimate, 15 s pause after a 429 (benchmarks/
  ratelimit_peers.py).

Achieved TPM is measured over whole minutes after the first minute (the simulator's buckets start
full, which lets anyone burst a whole extra minute at the start); the 429 rate is over every
HTTP answer of the run. The table goes between the ``ratelimit`` markers of BENCHMARKS.md.
``--quick``: only imgq with 4 processes and the two peers, one measured minute (~7 min).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.common import Simulator, stop_process, write_section
from benchmarks.ratelimit_peers import MODEL, Call, run_cookbook, run_naive
from shared.embedded_redis import EmbeddedRedis
from shared.text_tokens import prompt_tokens
from shared.vision_tokens import image_tokens

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Describe this image in one sentence."
MAX_OUT = 200
SIZE = 512


@dataclass(frozen=True)
class Setup:
    tpm: int = 60_000
    rpm: int = 3_000
    latency_ms: int = 500
    jitter_ms: int = 200
    minutes: int = 2  # measured minutes, after the first one
    worker_concurrency: int = 32

    @property
    def call_tokens(self) -> int:
        return prompt_tokens([PROMPT], [image_tokens(MODEL, SIZE, SIZE, "auto")]) + MAX_OUT

    @property
    def run_seconds(self) -> float:
        return 60.0 * (self.minutes + 1) + 4.0

    @property
    def calls(self) -> int:  # comfortably more than the limit lets through
        return math.ceil(self.tpm * (self.minutes + 1.5) / self.call_tokens) + 40


def png(i: int) -> bytes:
    im = Image.new("RGB", (SIZE, SIZE), ((i * 67) % 256, (i * 131) % 256, (i * 29) % 256))
    im.putpixel((i % SIZE, (i // SIZE) % SIZE), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def start_sim(s: Setup) -> Simulator:
    return Simulator("--tpm", str(s.tpm), "--rpm", str(s.rpm), "--latency-ms", str(s.latency_ms),
                     "--jitter-ms", str(s.jitter_ms), "--seed", "1")  # fmt: skip


def measure(
    stats: dict[str, Any], s: Setup, name: str, procs: int, out: Counter[str]
) -> dict[str, Any]:
    per_s: list[int] = stats["admitted_tokens_per_second"]
    first = next((i for i, n in enumerate(per_s) if n), 0)
    window = per_s[first + 60 : first + 60 + 60 * s.minutes]
    answers = sum(int(v) for v in stats["requests"].values())
    n429 = int(stats["requests"].get("429", 0))
    return {
        "approach": name,
        "processes": procs,
        "tpm_ratio": sum(window) / (s.tpm * max(1, len(window)) / 60),
        "rate_429": n429 / answers if answers else 0.0,
        "answers": answers,
        "n429": n429,
        "max60_ratio": stats["max_tokens_in_any_60s"] / s.tpm,
        "ok": out.get("ok", stats["completed"]),
        "failed": sum(v for k, v in out.items() if k.startswith("failed")),
        "complete_window": len(window) == 60 * s.minutes,
    }


# -- imgq: the real pipeline ----------------------------------------------------------------------
def _worker_env(redis_url: str, sim: Simulator, s: Setup) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGQ_", "OPENAI_"))}
    env.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT / ".cache" / "tiktoken"))
    env.update(
        IMGQ_REDIS_URL=redis_url,
        OPENAI_BASE_URL=sim.base_url,
        OPENAI_API_KEY="sk-bench",
        IMGQ_MODEL_LIMITS=json.dumps({MODEL: {"tpm": s.tpm, "rpm": s.rpm}}),
        IMGQ_LOG_LEVEL="WARNING",
    )
    return env


def run_imgq(s: Setup, procs: int) -> dict[str, Any]:
    import redis

    from producer.client import Client, SubmitRequest
    from shared.settings import Settings

    sim = start_sim(s)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with EmbeddedRedis() as r:
            env = _worker_env(r.url, sim, s)
            for i in range(procs):
                cmd = [sys.executable, "-m", "producer.cli", "worker", "-c",
                       str(s.worker_concurrency), "-Q", "interactive,bulk", "-l", "WARNING",
                       "-n", f"bench{i}-{os.getpid()}@%h"]  # fmt: skip
                workers.append(
                    subprocess.Popen(
                        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    )
                )
            check = redis.Redis.from_url(r.url)
            deadline = time.monotonic() + 60
            while not check.exists("_kombu.binding.interactive"):
                if time.monotonic() > deadline:
                    raise RuntimeError("imgq workers did not start")
                time.sleep(0.2)
            time.sleep(2.0 + procs)  # let every worker reach its consumer loop
            sim.reset()
            with Client(Settings(redis_url=r.url)) as client:
                t0 = time.monotonic()
                ids = client.submit_many(
                    SubmitRequest(images=[png(i)], prompt=PROMPT, max_output_tokens=MAX_OUT,
                                  model=MODEL, dedup=False)
                    for i in range(s.calls)
                )  # fmt: skip
                # The clock starts at the first admission (building hundreds of jobs takes a while).
                while not sim.stats()["admitted_tokens"] and time.monotonic() - t0 < 120:
                    time.sleep(0.5)
                time.sleep(s.run_seconds)
                stats = sim.stats()
                failed = sum(
                    1 for j in ids if (res := client.get(j)) is not None and res.status == "failed"
                )
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)  # all at once: they drain in parallel
        for w in workers:
            stop_process(w, timeout=5)
        sim.stop()
    return measure(stats, s, "imgq", procs, Counter(failed=failed))


def run_peer(s: Setup, name: str) -> dict[str, Any]:
    sim = start_sim(s)
    try:
        # Enough work to stay saturated (the naive client gives calls up after 2 retries).
        n = s.calls * (12 if name == "naive" else 2)
        calls = [Call(PROMPT, "data:image/png;base64," + base64.b64encode(png(i)).decode(), MAX_OUT)
                 for i in range(n)]  # fmt: skip
        sim.reset()
        # A few seconds more than imgq's run: creating thousands of calls delays the first one.
        seconds = s.run_seconds + 15
        if name == "naive":
            out = asyncio.run(run_naive(sim.base_url, calls, seconds=seconds))
        else:
            out = asyncio.run(run_cookbook(sim.base_url, calls, seconds=seconds,
                                           tpm=s.tpm, rpm=s.rpm))  # fmt: skip
        stats = sim.stats()
    finally:
        sim.stop()
    return measure(stats, s, name, 1, out)


def table(rows: list[dict[str, Any]], s: Setup, quick: bool) -> str:
    lines = [
        f"Simulator: TPM {s.tpm:,}, RPM {s.rpm:,}, latency {s.latency_ms}±{s.jitter_ms} ms; "
        f"each call ≈ {s.call_tokens} tokens at admission (512x512 PNG on {MODEL} + prompt + "
        f"max_tokens {MAX_OUT}); achieved TPM over {s.minutes} whole minute(s) after the first; "
        f"{'`--quick`' if quick else 'full'} run on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| approach | processes | achieved TPM / limit | 429 rate | 429s / answers "
        "| calls given up | max tokens in any 60 s / limit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['approach']} | {r['processes']} | {r['tpm_ratio']:.3f} "
            f"| {100 * r['rate_429']:.2f} % | {r['n429']} / {r['answers']} | {r['failed']} "
            f"| {r['max60_ratio']:.2f} |"
        )
    lines += ["", verdict(rows)]
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> str:
    imgq = max((r for r in rows if r["approach"] == "imgq"), key=lambda r: r["processes"])
    peers = [r for r in rows if r["approach"] != "imgq"]
    met = imgq["tpm_ratio"] >= 0.95 and imgq["rate_429"] < 0.005
    best_tpm = all(imgq["tpm_ratio"] >= p["tpm_ratio"] for p in peers)
    best_429 = all(imgq["rate_429"] <= p["rate_429"] for p in peers)
    word = {True: "met", False: "**missed**"}
    note = (
        " (a peer above 1.0 got there because the simulator's bucket let it exceed TPM within a"
        " minute, which imgq never does by design: see the last column)"
    )
    return (
        f"Targets at {imgq['processes']} processes: ≥ 0.95 of TPM with < 0.5 % 429s: {word[met]}; "
        f"best 429 rate of the three: {word[best_429]}; best achieved TPM: {word[best_tpm]}"
        + (note if not best_tpm and any(p["tpm_ratio"] > 1.0 for p in peers) else "")
        + "."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="imgq x4 and the peers, 1 minute each")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT / ".cache" / "tiktoken"))
    s = Setup(minutes=1) if args.quick else Setup()
    procs = (4,) if args.quick else (1, 2, 4)
    rows = []
    for n in procs:
        print(f"imgq, {n} worker process(es)...", flush=True)
        rows.append(run_imgq(s, n))
        print(rows[-1], flush=True)
    for name in ("naive", "cookbook"):
        print(f"{name}...", flush=True)
        rows.append(run_peer(s, name))
        print(rows[-1], flush=True)
    text = table(rows, s, args.quick)
    print(text)
    print(json.dumps(rows), file=sys.stderr)
    if not args.no_write:
        write_section("ratelimit", text, args.output)


if __name__ == "__main__":
    main()
