"""The layer contract (pyproject [tool.importlinter]) runs with the suite, so CI keeps it.

imgq (entry points) -> producer | workers | simulator (independent) -> shared; no cycles.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_contract_is_kept() -> None:
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_the_contract_catches_a_sideways_import(tmp_path: Path) -> None:
    # The same contract over a copy of the tree with one forbidden import added must fail,
    # or the test above proves nothing.
    import shutil

    for pkg in ("imgq", "producer", "workers", "simulator", "shared"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "producer" / "sideways.py").write_text("import workers.tasks\n")
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    assert "producer.sideways -> workers.tasks" in proc.stdout
