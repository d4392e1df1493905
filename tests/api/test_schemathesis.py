"""schemathesis against the live API (its own /openapi.json): no 5xx, nothing off the spec."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.api.conftest import ApiStack
from tests.conftest import ROOT
from tests.procs import stop_processes

CHECKS = ",".join((
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
))  # fmt: skip


def _st() -> str:
    found = Path(sys.executable).with_name("st")
    return str(found) if found.exists() else (shutil.which("st") or "st")


def test_the_live_api_keeps_its_openapi_document(api_stack: ApiStack) -> None:
    key = api_stack.key("fuzzer")
    # The stack's worker takes interactive jobs only (other tests keep bulk jobs queued); here
    # bulk jobs are answered too, or a fuzzed `GET ?wait=` on one waits out the 20 s timeout.
    log = open(api_stack.tmp / "fuzz-bulk-worker.log", "wb")  # noqa: SIM115
    bulk = subprocess.Popen(
        [sys.executable, "-m", "imgq.cli", "worker", "-c", "4", "-Q", "bulk", "-n", "fuzz-bulk@%h", "-l", "INFO"],
        cwd=ROOT, env=api_stack.env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        _wait_until_ready(api_stack.tmp / "fuzz-bulk-worker.log")
        out = _fuzz(api_stack, key)
    finally:
        stop_processes(bulk)
        log.close()
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "No issues found" in out.stdout or "passed" in out.stdout, out.stdout[-3000:]


def _wait_until_ready(log: Path) -> None:
    """Celery logs `<name> ready.` once it consumes (every queue shares one kombu binding)."""
    deadline = time.monotonic() + 60
    while b" ready." not in log.read_bytes():
        assert time.monotonic() < deadline, "the bulk worker did not start"
        time.sleep(0.2)


def _fuzz(api_stack: ApiStack, key: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        _st(), "run", f"{api_stack.url}/openapi.json",
        "-H", f"Authorization: Bearer {key}",
        "--checks", CHECKS,
        "--max-examples", "25",
        "--seed", "11",
        "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "90",  # a fuzzed image URL may hang its fetch (20 s)
        "--suppress-health-check", "all",
        "--no-color",
    ]  # fmt: skip
    # cwd: schemathesis keeps a cache directory (.schemathesis/) where it runs; not in the repo.
    return subprocess.run(
        cmd, cwd=api_stack.tmp, capture_output=True, text=True, timeout=600, check=False
    )
