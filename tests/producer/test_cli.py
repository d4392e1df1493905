"""`imgq` run as a real process (``python -m imgq.cli``) against the package's stack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from imgq.cli import main
from producer.client import Client
from shared.settings import Settings
from tests.conftest import ROOT
from tests.pipeline.conftest import make_image, sent_hash
from tests.producer.conftest import Stack

IMAGE_LINE = re.compile(r"IMAGE sha256=([0-9a-f]{16})")
PROMPT = "Describe this image."


def imgq(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgq.cli", *args],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_submit_folder_wait_output_jsonl(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    images = {
        "a.png": make_image(201),
        "b.PNG": make_image(202, size=(70, 30)),
        "c.webp": make_image(203, fmt="WEBP"),
    }
    for name, data in images.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(make_image(204))
    (folder / "sub").mkdir()
    out = tmp_path / "out.jsonl"
    proc = imgq(stack, "submit", str(folder), "--prompt", PROMPT, "--wait", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "3 succeeded, 0 failed" in proc.stderr
    # what the folder held but was not sent is named, with the reason
    assert f"skipped {folder / 'notes.txt'}: unknown image extension .txt" in proc.stderr
    assert f"skipped {folder / '.hidden.png'}: hidden file" in proc.stderr
    assert f"skipped {folder / 'sub'}: a folder" in proc.stderr
    assert "jobs" in proc.stderr  # the progress bar goes to stderr
    assert proc.stdout == ""  # results went to the file
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    docs = [json.loads(line) for line in lines]
    by_source = {d["source"]: d for d in docs}
    assert set(by_source) == {str(folder / n) for n in images}
    for name, data in images.items():
        d = by_source[str(folder / name)]
        assert d["status"] == "succeeded", d
        assert IMAGE_LINE.findall(d["output_text"]) == [sent_hash(data)]
        assert d["sources"] == [str(folder / name)]


@pytest.mark.slow
def test_submit_prints_ids_then_status_and_result(stack: Stack, tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    a.write_bytes(make_image(211))
    b.write_bytes(make_image(212, fmt="JPEG"))
    proc = imgq(stack, "submit", str(a), str(b), "--prompt", PROMPT, "--api", "responses")
    assert proc.returncode == 0, proc.stderr
    ids = proc.stdout.split()
    assert len(ids) == 2
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    with Client(Settings(redis_url=stack.redis_url)) as c:
        for job_id in ids:
            assert c.wait(job_id, timeout=30).status == "succeeded"
    status = imgq(stack, "status", ids[0])
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == f"{ids[0]} succeeded attempts=1"
    result = imgq(stack, "result", ids[1])
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["job_id"] == ids[1]
    assert doc["metadata"] == {"source": str(b)}
    assert IMAGE_LINE.findall(doc["output_text"]) == [sent_hash(b.read_bytes())]


@pytest.mark.slow
def test_submit_wait_with_a_failed_job_exits_1(stack: Stack, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(make_image(221))
    bad.write_bytes(b"this is text, not a PNG")
    proc = imgq(stack, "submit", str(good), str(bad), "--prompt", PROMPT, "--wait")
    assert proc.returncode == 1
    assert "1 succeeded, 1 failed" in proc.stderr
    docs = {d["source"]: d for d in map(json.loads, proc.stdout.splitlines())}
    assert docs[str(good)]["status"] == "succeeded"
    assert docs[str(bad)]["status"] == "failed"
    assert docs[str(bad)]["error"]["code"] in ("invalid_image", "unsupported_image_format")
    status = imgq(stack, "status", docs[str(bad)]["job_id"])
    assert f"failed attempts=0 {docs[str(bad)]['error']['code']}:" in status.stdout


def test_status_and_result_of_an_unknown_job(stack: Stack) -> None:
    for cmd in ("status", "result"):
        proc = imgq(stack, cmd, "no-such-job")
        assert proc.returncode == 1
        assert "no job no-such-job" in proc.stderr


def test_submit_a_folder_without_images_is_a_usage_error(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "logo.svg").write_text("<svg/>")
    proc = imgq(stack, "submit", str(tmp_path), "--prompt", PROMPT)
    assert proc.returncode == 2
    assert "no images found" in proc.stderr
    assert f"skipped {tmp_path / 'logo.svg'}: unknown image extension .svg" in proc.stderr
    assert f"skipped {tmp_path / 'scan.pdf'}: unknown image extension .pdf" in proc.stderr


def test_estimate_on_a_generated_image(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (1024, 1024), "red").save(path)
    proc = subprocess.run(
        [sys.executable, "-m", "imgq.cli", "estimate", "--json", "-m", "gpt-4o", "-d", "high",
         str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (img,) = doc["images"]
    assert (img["width"], img["height"], img["sent_width"], img["sent_height"]) == (
        1024, 1024, 768, 768,
    )  # fmt: skip
    assert img["tokens"] == doc["total_tokens"] == 765  # OpenAI's documented gpt-4o figure


def test_top_level_help_in_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imgq.cli", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0
    for cmd in ("api", "demo", "estimate", "limits", "result", "sim", "status", "submit", "worker"):
        assert re.search(rf"^\s+{cmd}\s", proc.stdout, re.M), cmd


@pytest.mark.parametrize(
    ("cmd", "words"),
    [
        ("submit", ["--prompt", "--wait", "--output", "--detail", "--api", "--max-output-tokens"]),
        ("status", ["JOB_ID"]),
        ("result", ["JOB_ID"]),
        ("worker", ["--concurrency", "--queues"]),
        ("demo", ["--workers"]),
        ("api", ["--host", "--port"]),
        ("estimate", ["--model", "--detail"]),
        ("limits", ["--help"]),
        ("sim", ["--tpm", "--rpm"]),
    ],
)
def test_help_of_each_command(cmd: str, words: list[str]) -> None:
    # In-process (same click objects `imgq` runs): ten interpreter start-ups would cost ~10 s.
    res = CliRunner().invoke(main, [cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("Usage:")
    for w in words:
        assert w in res.output, (cmd, w)
