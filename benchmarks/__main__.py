"""Run every benchmark (what `make bench` does), one after another, each in its own process.

    python -m benchmarks [--quick] [--output BENCHMARKS.md] [--only images,overhead]

Each writes its own section of BENCHMARKS.md; a failing one does not stop the others, but the
exit status is non-zero. One at a time: they measure CPU and throughput, so they must not share
the machine with each other.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, bench_env

# name -> extra arguments in --quick mode (benchmarks.images has no --quick: fewer repeats)
QUICK_ARGS = {
    "images": ["--repeat", "3"],
    "ratelimit": ["--quick"],
    "overhead": ["--quick"],
    "inflight": ["--quick"],
    "resources": ["--quick"],
    "batch": ["--quick"],
}


def available() -> list[str]:
    """The benchmarks present (ratelimit may not exist yet in a given checkout)."""
    return [n for n in QUICK_ARGS if importlib.util.find_spec(f"benchmarks.{n}") is not None]


def command(name: str, *, quick: bool, output: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", f"benchmarks.{name}"]
    if quick:
        cmd += QUICK_ARGS[name]
    if output is not None:
        cmd += ["--output", str(output)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="each benchmark's short mode")
    ap.add_argument("--output", type=Path, default=None, help="default: BENCHMARKS.md")
    ap.add_argument("--only", default="", help="comma-separated names: " + ",".join(QUICK_ARGS))
    args = ap.parse_args(argv)
    names = available()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            ap.error(f"unknown or missing benchmark(s): {', '.join(unknown)}")
        names = [n for n in names if n in wanted]
    failed: list[str] = []
    for name in names:
        cmd = command(name, quick=args.quick, output=args.output)
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.run(cmd, cwd=ROOT, env=bench_env()).returncode
        print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
