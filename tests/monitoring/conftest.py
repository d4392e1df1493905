"""Monitoring helpers: the `imgq` command; processes start with the `processes` fixture."""

from __future__ import annotations

import sys
import tomllib

from tests.conftest import ROOT


def imgq_command(*args: str) -> list[str]:
    """Run the `imgq` console script's function with this interpreter (no install needed)."""
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["imgq"]
    module, func = script.split(":")
    runner = f"import sys; sys.argv[0] = 'imgq'; from {module} import {func}; {func}()"
    return [sys.executable, "-c", runner, *args]
