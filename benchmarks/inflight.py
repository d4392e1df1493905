"""Concurrent API calls one `imgq worker` process sustains (target: >= 500 in flight).

    python -m benchmarks.inflight [--quick] [--output BENCHMARKS.md] [--no-write]

One worker process (`-c 1000`, the default local cap IMGQ_MAX_IN_FLIGHT=1000), a simulator that
answers after 6 s, N jobs submitted at once. The simulator counts the calls it holds at once
(`peak_in_flight`); we also report the worker's CPU per job and its resident memory.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from PIL import Image

from benchmarks.common import (
    DEFAULT_OUTPUT,
    HUGE_RPM,
    HUGE_TPM,
    Simulator,
    fast_simulator_flags,
    machine_summary,
    process_cpu_seconds,
    start_imgq_worker,
    stop_process,
    write_section,
)
from producer.client import Client, SubmitRequest
from shared.embedded_redis import EmbeddedRedis
from shared.settings import Settings

LATENCY_MS = 10000  # vision calls take seconds; the notes measured at 10 s too


def _image(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (i % 256, (i // 256) % 256, 90)).save(buf, "PNG")
    return buf.getvalue()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set
            return int(line.split()[1]) / 1024
    return float("nan")


def run(jobs: int) -> dict[str, float]:
    limits = json.dumps({"gpt-4.1-mini": {"tpm": HUGE_TPM, "rpm": HUGE_RPM}})
    with EmbeddedRedis() as redis, Simulator(*fast_simulator_flags(LATENCY_MS)) as sim:
        worker = start_imgq_worker(
            redis.url, sim, concurrency=1000, name="inflight", IMGQ_MODEL_LIMITS=limits
        )
        try:
            cpu0 = process_cpu_seconds(worker.pid)
            started = time.monotonic()
            with Client(Settings(redis_url=redis.url)) as c:
                ids = c.submit_many(
                    SubmitRequest(images=[_image(i)], prompt="Describe.", dedup=False)
                    for i in range(jobs)
                )
                results = list(c.as_completed(ids, timeout=600))
            wall = time.monotonic() - started
            cpu = process_cpu_seconds(worker.pid) - cpu0
            rss = _rss_mib(worker.pid)
            stats = sim.stats()
        finally:
            stop_process(worker)
    return {
        "jobs": jobs,
        "succeeded": sum(r.status == "succeeded" for r in results),
        "peak_in_flight": stats["peak_in_flight"],
        "wall_s": wall,
        "ideal_wall_s": jobs / 1000 * LATENCY_MS / 1000,
        "cpu_ms_per_job": cpu / jobs * 1000,
        "rss_mib": rss,
    }


def report(row: dict[str, float], quick: bool) -> str:
    verdict = "met" if row["peak_in_flight"] >= 500 else "**missed**"
    return "\n".join(
        [
            "### Calls in flight in one worker process (`python -m benchmarks.inflight"
            + (" --quick" if quick else "")
            + "`)",
            "",
            f"{machine_summary()}. One `imgq worker -c 1000` process (local cap"
            f" IMGQ_MAX_IN_FLIGHT=1000), simulator answering after {LATENCY_MS / 1000:g} s,"
            f" {row['jobs']:.0f} distinct one-image jobs submitted at once.",
            "",
            "| jobs | succeeded | peak calls in flight (simulator) | wall | wall at 1,000 in flight"
            " | worker CPU per job | worker peak RSS |",
            "|---|---|---|---|---|---|---|",
            f"| {row['jobs']:.0f} | {row['succeeded']:.0f} | **{row['peak_in_flight']:.0f}** |"
            f" {row['wall_s']:.1f} s | {row['ideal_wall_s']:.1f} s | {row['cpu_ms_per_job']:.2f} ms"
            f" | {row['rss_mib']:.0f} MiB |",
            "",
            f"Target >= 500 concurrent API calls in one worker process: {verdict}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="calls in flight in one worker process")
    ap.add_argument("--quick", action="store_true", help="600 jobs instead of 1500")
    ap.add_argument("--output", "--out", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    row = run(600 if args.quick else 1500)
    text = report(row, args.quick)
    print(text)
    if not args.no_write:
        write_section("inflight", text, args.output)
    return 0 if row["succeeded"] == row["jobs"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
