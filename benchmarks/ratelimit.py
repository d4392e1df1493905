"""Rate-limit benchmark (limiter v2), side by side in one run against the simulator's buckets.

    python -m benchmarks.ratelimit [--quick] [--no-write] [--only burst,backlog,fairness]

* **burst**: N image jobs (one distinct 512x512 PNG + a short prompt, gpt-4.1-mini, max_tokens
  200) at a TPM that takes >= 1.5 min to drain. Wall time from the first call sent to the last
  answer, vs the ideal client's (spend the full bucket at once, then exactly the refill:
  ``(N x tokens - TPM) / (TPM/60)`` + one latency); imgq with 1, 2 and 4 ``imgq worker``
  processes (the real pipeline), and the two peers of benchmarks/ratelimit_peers.py.
* **backlog**: 2 worker processes, a bulk backlog minutes deep at TPM 60k, one interactive job
  every 3 s: interactive latency (submit -> result) vs the API latency; the steady admitted rate
  (minute 1 to the end of the interactive phase) vs TPM, and 429s.
* **fairness**: 4 OS processes backlogged on one limit (limiter level, benchmarks/
  ratelimit_fleet.py): each one's share of grants; two tenants with weights 3:1.

The table goes between the ``ratelimit`` markers of BENCHMARKS.md.
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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.common import (
    Simulator,
    percentile,
    start_imgq_worker,
    stop_process,
    wait_for_redis_key,
    write_section,
)
from benchmarks.ratelimit_fleet import shares
from benchmarks.ratelimit_peers import MODEL, Call, run_cookbook, run_naive
from shared.embedded_redis import EmbeddedRedis
from shared.text_tokens import prompt_tokens
from shared.vision_tokens import image_tokens

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Describe this image in one sentence."
MAX_OUT = 200
SIZE = 512
LATENCY_MS, JITTER_MS = 500, 200


def call_tokens() -> int:
    return prompt_tokens([PROMPT], [image_tokens(MODEL, SIZE, SIZE, "auto")]) + MAX_OUT


def png(i: int) -> bytes:
    im = Image.new("RGB", (SIZE, SIZE), ((i * 67) % 256, (i * 131) % 256, (i * 29) % 256))
    im.putpixel((i % SIZE, (i // SIZE) % SIZE), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def start_sim(tpm: int, rpm: int) -> Simulator:
    return Simulator("--tpm", str(tpm), "--rpm", str(rpm), "--latency-ms", str(LATENCY_MS),
                     "--jitter-ms", str(JITTER_MS), "--seed", "1")  # fmt: skip


@dataclass(frozen=True)
class Burst:
    n: int = 1000
    tpm: int = 240_000
    rpm: int = 10_000
    concurrency: int = 32

    @property
    def ideal_s(self) -> float:
        return max(0.0, self.n * call_tokens() - self.tpm) / (self.tpm / 60) + LATENCY_MS / 1000


def _workers(url: str, sim: Simulator, n: int, concurrency: int, tpm: int, rpm: int) -> list[Any]:
    limits = json.dumps({MODEL: {"tpm": tpm, "rpm": rpm}})
    procs = [
        start_imgq_worker(
            url, sim, concurrency=concurrency, name=f"rl{i}", wait=False, IMGQ_MODEL_LIMITS=limits
        )
        for i in range(n)
    ]
    wait_for_redis_key(url, "_kombu.binding.interactive")
    time.sleep(2.0 + n)  # let every worker reach its consumer loop
    return procs


def _answers(stats: dict[str, Any]) -> tuple[int, int]:
    answers = sum(int(v) for v in stats["requests"].values())
    return answers, int(stats["requests"].get("429", 0))


def run_imgq_burst(b: Burst, procs: int) -> dict[str, Any]:
    from producer.client import Client, SubmitRequest
    from shared.settings import Settings

    sim = start_sim(b.tpm, b.rpm)
    workers: list[Any] = []
    try:
        with EmbeddedRedis() as r:
            workers = _workers(r.url, sim, procs, b.concurrency, b.tpm, b.rpm)
            sim.reset()
            with Client(Settings(redis_url=r.url)) as client:
                ids = client.submit_many(
                    SubmitRequest(images=[png(i)], prompt=PROMPT, max_output_tokens=MAX_OUT,
                                  model=MODEL, dedup=False, priority="bulk")
                    for i in range(b.n)
                )  # fmt: skip
                results = list(client.as_completed(ids, timeout=b.ideal_s * 3 + 120))
            stats = sim.stats()
    finally:
        for w in workers:
            stop_process(w, timeout=10)
        sim.stop()
    ok = [x for x in results if x.status == "succeeded"]
    start = min(x.timings.started_at or math.inf for x in ok)
    end = max(x.timings.finished_at or 0.0 for x in ok)
    answers, n429 = _answers(stats)
    return {"approach": "imgq", "processes": procs, "wall_s": end - start, "ok": len(ok),
            "failed": b.n - len(ok), "answers": answers, "n429": n429,
            "max60": stats["max_tokens_in_any_60s"] / b.tpm}  # fmt: skip


def run_peer_burst(b: Burst, name: str) -> dict[str, Any]:
    sim = start_sim(b.tpm, b.rpm)
    try:
        calls = [Call(PROMPT, "data:image/png;base64," + base64.b64encode(png(i)).decode(), MAX_OUT)
                 for i in range(b.n)]  # fmt: skip
        sim.reset()
        t0 = time.monotonic()
        seconds = b.ideal_s * 3 + 60
        if name == "naive":
            out = asyncio.run(run_naive(sim.base_url, calls, seconds=seconds))
        else:
            out = asyncio.run(run_cookbook(sim.base_url, calls, seconds=seconds,
                                           tpm=b.tpm, rpm=b.rpm))  # fmt: skip
        wall = time.monotonic() - t0
        stats = sim.stats()
    finally:
        sim.stop()
    answers, n429 = _answers(stats)
    ok = int(out.get("ok", 0))
    return {"approach": name, "processes": 1, "wall_s": wall, "ok": ok, "failed": b.n - ok,
            "answers": answers, "n429": n429, "max60": stats["max_tokens_in_any_60s"] / b.tpm}  # fmt: skip


def run_backlog(
    tpm: int = 60_000, bulk: int = 600, every_s: float = 3.0, interactive_s: float = 300.0
) -> dict[str, Any]:
    from producer.client import Client, SubmitRequest
    from shared.settings import Settings

    sim = start_sim(tpm, 10_000)
    workers: list[Any] = []
    inter_ids: list[str] = []
    try:
        with EmbeddedRedis() as r:
            workers = _workers(r.url, sim, 2, 32, tpm, 10_000)
            sim.reset()
            with Client(Settings(redis_url=r.url)) as client:
                client.submit_many(
                    SubmitRequest(images=[png(i)], prompt=PROMPT, max_output_tokens=MAX_OUT,
                                  model=MODEL, dedup=False, priority="bulk")
                    for i in range(bulk)
                )  # fmt: skip
                time.sleep(10.0)  # the bulk backlog holds the limit before interactive arrives
                t_end = time.monotonic() + interactive_s
                i = 0
                while time.monotonic() < t_end:
                    inter_ids += client.submit_many([SubmitRequest(
                        images=[png(100_000 + i)], prompt=PROMPT, max_output_tokens=MAX_OUT,
                        model=MODEL, dedup=False, priority="interactive")])  # fmt: skip
                    i += 1
                    time.sleep(every_s)
                stats = sim.stats()
                inter = list(client.as_completed(inter_ids, timeout=120))
    finally:
        for w in workers:
            stop_process(w, timeout=10)
        sim.stop()
    lat = [x.timings.finished_at - x.timings.queued_at for x in inter
           if x.status == "succeeded" and x.timings.finished_at and x.timings.queued_at]  # fmt: skip
    api = [x.timings.api_seconds for x in inter if x.status == "succeeded"]
    per_s: list[int] = stats["admitted_tokens_per_second"]
    first = next((k for k, v in enumerate(per_s) if v), 0)
    window = per_s[first + 60 : first + 10 + int(interactive_s)]
    answers, n429 = _answers(stats)
    return {"tpm": tpm, "bulk": bulk, "interactive": len(inter_ids), "ok": len(lat),
            "p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat),
            "api_p50": percentile(api, 50), "steady_ratio": sum(window) / (tpm * len(window) / 60),
            "steady_s": len(window), "answers": answers, "n429": n429}  # fmt: skip


def run_fairness() -> dict[str, Any]:
    with EmbeddedRedis() as r:
        four = shares(r.url, ["", "", "", ""])
        a, b = shares(r.url, ["a", "b"])
    return {"four": four, "tenants": [a, b]}


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.2f} %" if b else "-"


def table(b: Burst, burst: list[dict[str, Any]], backlog: dict[str, Any] | None,
          fair: dict[str, Any] | None, note: str) -> str:  # fmt: skip
    word = {True: "met", False: "**missed**"}
    lines = [f"{note} Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other "
             f"agents' work), Python {platform.python_version()}. Simulator latency "
             f"{LATENCY_MS}±{JITTER_MS} ms; each call ≈ {call_tokens()} tokens at admission "
             f"(512x512 PNG on {MODEL} + prompt + max_tokens {MAX_OUT})."]  # fmt: skip
    if burst:
        lines += ["", f"**Burst**: {b.n} image jobs at TPM {b.tpm:,} (RPM {b.rpm:,}); ideal client "
                  f"= spend the bucket, then the refill, + one latency.", "",
                  "| approach | processes | wall s | / ideal | ok | failed | 429s / answers "
                  "| max tokens in any 60 s / TPM |", "|---|---|---|---|---|---|---|---|",
                  f"| ideal client | - | {b.ideal_s:.1f} | 1.00 | {b.n} | 0 | 0 | - |"]  # fmt: skip
        for r in burst:
            lines.append(
                f"| {r['approach']} | {r['processes']} | {r['wall_s']:.1f} "
                f"| {r['wall_s'] / b.ideal_s:.3f} | {r['ok']} | {r['failed']} "
                f"| {r['n429']} / {r['answers']} ({_pct(r['n429'], r['answers'])}) "
                f"| {r['max60']:.2f} |"
            )
        mine = [r for r in burst if r["approach"] == "imgq"]
        met = all(r["wall_s"] <= 1.05 * b.ideal_s and r["failed"] == 0
                  and r["n429"] < 0.005 * max(1, r["answers"]) for r in mine)  # fmt: skip
        lines += ["", f"Target (imgq at every process count: ≤ 1.05 x ideal, 0 failed, < 0.5 % "
                  f"429s): {word[met]}."]  # fmt: skip
    if backlog:
        k = backlog
        ok_lat = k["p50"] <= 2 * k["api_p50"] and k["p99"] <= 5 * k["api_p50"]
        ok_rate = k["steady_ratio"] >= 0.98 and k["n429"] == 0
        lines += ["", f"**Backlog**: 2 worker processes, {k['bulk']} bulk jobs at TPM "
                  f"{k['tpm']:,} (a backlog ≈ {k['bulk'] * call_tokens() / k['tpm']:.1f} min "
                  f"deep), one interactive job every 3 s ({k['interactive']} jobs).", "",
                  "| interactive p50 | p99 | max | API latency p50 | p50 / API | p99 / API "
                  "| steady admitted / TPM | over | 429s / answers |",
                  "|---|---|---|---|---|---|---|---|---|",
                  f"| {k['p50']:.2f} s | {k['p99']:.2f} s | {k['max']:.2f} s "
                  f"| {k['api_p50']:.2f} s | {k['p50'] / k['api_p50']:.2f} "
                  f"| {k['p99'] / k['api_p50']:.2f} | {k['steady_ratio']:.3f} "
                  f"| {k['steady_s']} s | {k['n429']} / {k['answers']} |", "",
                  f"Targets: interactive p50 ≤ 2x and p99 ≤ 5x API latency: {word[ok_lat]}; "
                  f"steady rate ≥ 0.98 of TPM with 0 429s: {word[ok_rate]}."]  # fmt: skip
    if fair:
        four, (a, bb) = fair["four"], fair["tenants"]
        tot = sum(four)
        ok4 = all(abs(c / tot - 0.25) <= 0.05 for c in four)
        ok_t = 2.7 <= a / bb <= 3.3
        lines += ["", "**Fairness** (limiter level: OS processes backlogged on one limit, 20 "
                  "grants/s, 32 waiters each, counted over 11 s while all wait):", "",
                  "| case | grants | shares | target |", "|---|---|---|---|",
                  f"| 4 processes | {four} | {', '.join(f'{100 * c / tot:.1f} %' for c in four)} "
                  f"| 25 % ± 5 %: {word[ok4]} |",
                  f"| tenants a:b weights 3:1 | {[a, bb]} | {a / bb:.2f} : 1 "
                  f"| 3:1 ± 10 %: {word[ok_t]} |"]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="burst of 400 at 1 process; 2-min backlog")
    ap.add_argument("--only", default="burst,backlog,fairness")
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--peers", default="naive,cookbook")
    ap.add_argument("--backlog-seconds", type=float, default=660.0)  # a 10-minute steady window
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT / ".cache" / "tiktoken"))
    only = set(args.only.split(","))
    b = Burst(n=400, tpm=100_000) if args.quick else Burst()
    burst: list[dict[str, Any]] = []
    backlog = fair = None
    if "fairness" in only:
        fair = run_fairness()
        print(fair, flush=True)
    if "burst" in only:
        for n in (int(x) for x in args.procs.split(",") if x):
            burst.append(run_imgq_burst(b, n))
            print(burst[-1], flush=True)
        for name in (x for x in args.peers.split(",") if x):
            burst.append(run_peer_burst(b, name))
            print(burst[-1], flush=True)
    if "backlog" in only:
        secs = 120.0 if args.quick else args.backlog_seconds
        backlog = run_backlog(bulk=int(60_000 * (secs / 60 + 1.2) / call_tokens()),
                              interactive_s=secs)  # fmt: skip
        print(backlog, flush=True)
    cmd = "python -m benchmarks.ratelimit " + " ".join(sys.argv[1:])
    text = table(
        b,
        burst,
        backlog,
        fair,
        f"`{cmd.strip()}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
    )
    print(text)
    if not args.no_write:
        write_section("ratelimit", text, args.output)


if __name__ == "__main__":
    main()
