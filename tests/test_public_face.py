"""The public face: `from imgq import ...`, a light `imgq --help`, no hidden servers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import imgq
from shared import errors
from tests.conftest import ROOT

HEAVY = ("celery", "kombu", "openai", "PIL", "boto3", "botocore", "redis", "aiohttp", "tiktoken")


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_imgq_help_imports_no_heavy_module() -> None:
    code = (
        "from imgq.cli import main\n"
        "try:\n    main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
    )
    assert loaded_after(code) == []


def test_import_imgq_and_its_errors_stays_light() -> None:
    # The error tree is light on purpose: `except imgq.RetryableError` costs no client import.
    assert loaded_after("import imgq; imgq.ImgqError; imgq.RateLimitedError") == []


def test_the_probe_sees_a_heavy_import() -> None:
    # The check above would pass vacuously if the probe could not see imports.
    assert "celery" in loaded_after("import imgq; imgq.Client")


def test_help_still_lists_the_lazy_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imgq", "--help"], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for line in ("estimate  Tokens and cost", "limits    Show the fleet-wide", "sim       Run"):
        assert line in proc.stdout


def test_every_public_name_resolves_to_its_home() -> None:
    from producer.client import AsyncClient, Client, ImageInput, SubmitRequest
    from shared.jobs import Result

    assert (imgq.Client, imgq.AsyncClient, imgq.SubmitRequest, imgq.ImageInput, imgq.Result) == (
        Client, AsyncClient, SubmitRequest, ImageInput, Result,
    )  # fmt: skip
    for name in imgq.__all__:
        assert getattr(imgq, name) is not None
    # the whole error tree is public
    assert set(errors.__all__) <= set(imgq.__all__)
    assert "ConfigurationError" in dir(imgq)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = imgq.nope  # type: ignore[attr-defined]


@pytest.mark.parametrize("make", [imgq.Client, imgq.AsyncClient])
def test_a_client_without_redis_says_what_to_set(
    make: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMGQ_REDIS_URL", raising=False)
    with pytest.raises(imgq.ConfigurationError, match="IMGQ_REDIS_URL"):
        make()


def test_a_client_given_a_url_needs_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMGQ_REDIS_URL", raising=False)
    client = imgq.AsyncClient(redis_url="redis://127.0.0.1:1/0")  # nothing connects yet
    assert client.settings.redis_url == "redis://127.0.0.1:1/0"
