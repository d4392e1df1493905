"""Batch-route benchmark: the same test-paper pages online and through the Batch API (simulated).

    python -m benchmarks.batch [--quick] [--pages N] [--no-write]

N scanned test-paper pages (the bundled 1700x2200 scan, each stamped with its page number, so
every page is a distinct image), gpt-4.1-mini, max 300 output tokens, dedup off, through two
real ``imgq worker`` processes against the simulator:

* **online**: ``route=online`` at a tier-2-like limit for gpt-4.1-mini (2,000,000 TPM, 5,000
  RPM), 800 ms mean latency. Wall time is bounded by the TPM limit.
* **batch**: ``route=batch``; the simulator's batch takes ``BATCH_PROGRESS_S`` in progress (it
  stands for OpenAI's turnaround, hours and at most 24 h, which no benchmark can show), so the
  figure that matters besides the cost is imgq's own time around it: wall time minus the
  simulated batch time (sealing after the linger, upload, polling, download, mapping results).

Cost is what imgq recorded on the results (the simulator bills the exact tokens; imgq prices
them from the catalogue: batch at its 50 % discount). Section ``batch`` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from benchmarks.common import (
    ROOT,
    Simulator,
    machine_summary,
    start_imgq_worker,
    stop_process,
    write_section,
)
from producer.client import Client, SubmitRequest
from shared.embedded_redis import EmbeddedRedis
from shared.settings import Settings

MODEL = "gpt-4.1-mini"
PROMPT = "Grade this test paper: list each question and whether the answer is right."
MAX_OUT = 300
TPM, RPM, LATENCY_MS = 2_000_000, 5_000, 800
BATCH_VALIDATE_S, BATCH_PROGRESS_S, BATCH_FINALIZE_S = 1.0, 20.0, 1.0
LINGER_S = 2.0


def pages(n: int) -> list[bytes]:
    """``n`` distinct scanned pages (JPEG, as scanners send them)."""
    base = Image.open(ROOT / "imgq" / "samples" / "test-paper-scan.png").convert("L")
    out = []
    for i in range(n):
        page = base.copy()
        ImageDraw.Draw(page).text((40, 40), f"student {i:05d} - page 1", fill=0)
        buf = io.BytesIO()
        page.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


@dataclass
class Run:
    route: str
    pages: int
    succeeded: int
    wall_s: float
    cost_usd: float
    input_tokens: int
    output_tokens: int


def run_route(redis_url: str, route: str, images: list[bytes]) -> Run:
    with Client(Settings(redis_url=redis_url)) as c:
        started = time.monotonic()
        ids = c.submit_many(
            SubmitRequest(images=[img], prompt=PROMPT, model=MODEL, route=route,  # type: ignore[arg-type]
                          priority="bulk", max_output_tokens=MAX_OUT, dedup=False)
            for img in images
        )  # fmt: skip
        results = list(c.as_completed(ids, timeout=3600))
        wall = time.monotonic() - started
    ok = [r for r in results if r.status == "succeeded"]
    return Run(
        route=route,
        pages=len(images),
        succeeded=len(ok),
        wall_s=wall,
        cost_usd=sum(r.cost_usd or 0.0 for r in ok),
        input_tokens=sum(r.usage.input_tokens for r in ok),
        output_tokens=sum(r.usage.output_tokens for r in ok),
    )


def _sim_batch(sim: Simulator) -> dict[str, object]:
    with urllib.request.urlopen(f"{sim.root}/_sim/batch", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def render(online: Run, batch: Run, batches: int, sim_batch_s: float) -> str:
    rows = [
        "| route | pages ok | wall (s) | simulated batch time (s) | imgq time around it (s) "
        "| input tokens | output tokens | cost (USD) | USD / 1,000 pages |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r, sim_s in ((online, 0.0), (batch, sim_batch_s)):
        around = f"{r.wall_s - sim_s:.1f}" if sim_s else "-"
        rows.append(
            f"| {r.route} | {r.succeeded}/{r.pages} | {r.wall_s:.1f} | "
            f"{f'{sim_s:.0f}' if sim_s else '-'} | {around} | {r.input_tokens:,} | "
            f"{r.output_tokens:,} | {r.cost_usd:.4f} | {r.cost_usd / r.pages * 1000:.3f} |"
        )
    ratio = batch.cost_usd / online.cost_usd if online.cost_usd else float("nan")
    return "\n".join(
        [
            "## Batch route (issue 14)",
            "",
            f"`python -m benchmarks.batch` ({machine_summary()}): {online.pages} distinct "
            f"1700x2200 test-paper scans, {MODEL}, max {MAX_OUT} output tokens, dedup off, two "
            f"`imgq worker` processes. Online at {TPM:,} TPM / {RPM:,} RPM, {LATENCY_MS} ms "
            f"latency; batch: {batches} Batch API batch(es), the simulator's batch "
            f"{BATCH_VALIDATE_S:g} s validating + {BATCH_PROGRESS_S:g} s in progress + "
            f"{BATCH_FINALIZE_S:g} s finalizing (standing for OpenAI's hours), linger "
            f"{LINGER_S:g} s.",
            "",
            *rows,
            "",
            f"Batch / online cost: **{ratio:.3f}** (same tokens, catalogue batch discount). The "
            "batch's wall time is the simulated turnaround plus imgq's own time around it, which "
            "includes preparing every page (decode, resize: most of the online run's wall time "
            "too), the linger, upload, polling, download and mapping results back. Pages arrive "
            "over the preparation time, so the 2 s linger sealed several batches (a batch is "
            "sealed once its oldest page waited the linger). A real batch finishes within 24 h: "
            "the batch route is for work that can wait.",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="200 pages")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    n = 200 if args.quick else args.pages
    images = pages(n)
    batch_cfg = {"validate_s": BATCH_VALIDATE_S, "progress_s": BATCH_PROGRESS_S,
                 "finalize_s": BATCH_FINALIZE_S, "concurrency": 64}  # fmt: skip
    flags = ["--tpm", str(TPM), "--rpm", str(RPM), "--latency-ms", str(LATENCY_MS),
             "--jitter-ms", "200", "--seed", "1", "--batch", json.dumps(batch_cfg)]  # fmt: skip
    env = {"IMGQ_BATCH_LINGER_SECONDS": str(LINGER_S), "IMGQ_BATCH_TICK_SECONDS": "0.5",
           "IMGQ_BATCH_POLL_MIN_SECONDS": "1", "IMGQ_BATCH_POLL_MAX_SECONDS": "2",
           "IMGQ_MODEL_LIMITS": json.dumps({MODEL: {"tpm": TPM, "rpm": RPM}})}  # fmt: skip
    with EmbeddedRedis() as redis_server, Simulator(*flags) as sim:
        workers = [
            start_imgq_worker(
                redis_server.url, sim, concurrency=128, name=f"bb{i}", log=None, wait=True, **env
            )
            for i in range(2)
        ]
        try:
            online = run_route(redis_server.url, "online", images)
            print(online)
            batch = run_route(redis_server.url, "batch", images)
            print(batch)
        finally:
            for w in workers:
                stop_process(w)
        batches = int(str(_sim_batch(sim)["batches_created"]))
    text = render(online, batch, batches, BATCH_VALIDATE_S + BATCH_PROGRESS_S + BATCH_FINALIZE_S)
    print(text)
    if not args.no_write:
        write_section("batch", text, args.output)


if __name__ == "__main__":
    main()
