"""`python -m benchmarks.overhead --quick` runs end to end and writes only its own section."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import write_section
from tests.conftest import ROOT

OTHER = "<!-- images:start -->\nimage figures stay as they are\n<!-- images:end -->"


def test_write_section_replaces_only_its_own_markers(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    write_section("overhead", "first", out)
    assert (
        out.read_text() == "# Benchmarks\n\n<!-- overhead:start -->\nfirst\n<!-- overhead:end -->\n"
    )
    out.write_text(f"# Benchmarks\n\n{OTHER}\n\n" + out.read_text().split("\n\n", 1)[1])
    write_section("overhead", "second", out)
    text = out.read_text()
    assert OTHER in text and "second" in text and "first" not in text
    assert text.count("<!-- overhead:start -->") == 1


@pytest.mark.slow
def test_overhead_quick_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(f"# Benchmarks\n\n{OTHER}\n")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.overhead", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert OTHER in text  # someone else's section untouched
    section = text.split("<!-- overhead:start -->", 1)[1].split("<!-- overhead:end -->", 1)[0]
    for row in ("bare Celery no-op task", "imgq: submit_many", "imgq added, worker timings",
                "imgq: `call_openai`", "SDK default (httpx2)", "Targets:"):  # fmt: skip
        assert row in section, row
    # Every imgq job of the quick run succeeded, and throughput figures are real numbers.
    assert "imgq jobs not succeeded: 0." in section
    rates = re.findall(r"\| (\d+) \| (\d+\.\d\d)x \| (\d+\.\d\d) ms \|", section)
    assert len(rates) == 4 and all(float(r[0]) > 0 and float(r[2]) > 0 for r in rates)
    # imgq's path made every call at 1,000 in flight (connect errors are counted, not raised).
    assert re.search(r"aiohttp transport \| [\d.]+ ms \| \d+ / 1000", section)
