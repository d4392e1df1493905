"""`imgq estimate` and the price table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from producer.estimate import estimate
from shared.catalogue import builtin_catalogue
from shared.vision_tokens import image_tokens, vision_models
from tests.images import samples as s


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(estimate, list(args))
    return result.exit_code, result.output


def test_the_question_every_user_asks() -> None:
    code, out = _run("1900x1900", "--model", "gpt-4o", "--detail", "high", "--json")
    assert code == 0, out
    doc = json.loads(out)
    (row,) = doc["images"]
    assert (row["sent_width"], row["sent_height"], row["tokens"]) == (768, 768, 765)
    assert doc["total_cost_usd"] == pytest.approx(765 * 2.50 / 1e6)


def test_files_folders_and_errors(tmp_path: Path) -> None:
    (tmp_path / "rotated.jpg").write_bytes(s.jpeg_with_exif(s.photo((4000, 3000)), 6))
    (tmp_path / "scan.png").write_bytes(s.encode(s.line_art((1700, 2200)), "PNG"))
    (tmp_path / "notes.txt").write_text("not an image")  # skipped when expanding the folder
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"<html>oops</html>")
    code, out = _run(str(tmp_path), "--model", "gpt-4.1-mini", "--json")
    assert code == 1  # one image failed
    doc = json.loads(out)
    rows = {Path(r["image"]).name: r for r in doc["images"]}
    assert set(rows) == {"rotated.jpg", "scan.png", "bad.png"}
    assert rows["bad.png"]["error"].startswith("invalid_image:")
    rot = rows["rotated.jpg"]
    assert (rot["width"], rot["height"]) == (3000, 4000)  # as displayed
    assert rot["tokens"] == image_tokens("gpt-4.1-mini", 3000, 4000)
    assert doc["total_tokens"] == rot["tokens"] + rows["scan.png"]["tokens"]


def test_table_budget_and_prompt() -> None:
    code, out = _run(
        "4000x3000", "--model", "gpt-4o", "--detail", "high", "--max-image-tokens", "300",
        "--prompt", "Describe the image", "--output-tokens", "100",
    )  # fmt: skip
    assert code == 0, out
    assert "512x384" in out and "total (1 image, gpt-4o)" in out
    code, out = _run("10x10", "--model", "no-such-model")
    assert code == 2 and "no image token rules" in out


def test_every_vision_model_has_a_price() -> None:
    cat = builtin_catalogue()
    for model in vision_models():
        prices = cat.spec(model).prices
        assert prices is not None and prices.input > 0
    assert cat.spec("gpt-4o-2024-08-06") == cat.spec("gpt-4o")
    assert cat.spec("gpt-4o-mini-2024-07-18") == cat.spec("gpt-4o-mini")
    assert cat.cost_usd("gpt-5", 1_000_000, 0) == pytest.approx(1.25)
    assert cat.cost_usd("llama-3", 1_000_000, 0) is None
