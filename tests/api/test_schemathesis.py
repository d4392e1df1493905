"""schemathesis against the live API (its own /openapi.json): no 5xx, nothing off the spec."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.api.conftest import ApiStack

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
    cmd = [
        _st(), "run", f"{api_stack.url}/openapi.json",
        "-H", f"Authorization: Bearer {key}",
        "--checks", CHECKS,
        "--max-examples", "25",
        "--seed", "11",
        "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "20",
        "--suppress-health-check", "all",
        "--no-color",
    ]  # fmt: skip
    # cwd: schemathesis keeps a cache directory (.schemathesis/) where it runs; not in the repo.
    out = subprocess.run(
        cmd, cwd=api_stack.tmp, capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "No issues found" in out.stdout or "passed" in out.stdout, out.stdout[-3000:]
