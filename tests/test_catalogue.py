"""The model catalogue: lookups, snapshots, prices, the operators' file, the unknown policy."""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.catalogue import (
    UNKNOWN,
    UNKNOWN_NAME,
    CatalogueError,
    builtin_catalogue,
    catalogue_for,
    load_catalogue,
)
from shared.errors import NotFoundError
from shared.limiter import LimitsConfig
from shared.metrics import Metrics
from shared.settings import Settings
from shared.vision_tokens import image_tokens, vision_models
from tests.conftest import ROOT

CAT = builtin_catalogue()


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4.5-preview-2025-02-27", "gpt-4.5-preview"),
        ("o1-2024-12-17", "o1"),
        ("gpt-4o-0613", "gpt-4o"),  # the older -MMDD snapshot form
        ("gpt-image-1", "gpt-image-1"),
        # Other suffixes are other models, priced and limited differently: never folded in.
        ("o1-pro", UNKNOWN_NAME),
        ("o3-mini", UNKNOWN_NAME),
        ("gpt-4o-audio-preview", UNKNOWN_NAME),
        ("gpt-4o-2024-08-06-extra", UNKNOWN_NAME),
        ("gpt-4", UNKNOWN_NAME),
        ("my-llava", UNKNOWN_NAME),
        ("", UNKNOWN_NAME),
        ("gpt-4o" + "x" * 100_000, UNKNOWN_NAME),
    ],
)
def test_lookup_and_canonical_names(name: str, canonical: str) -> None:
    assert CAT.canonical(name) == canonical
    assert (CAT.find(name) is None) == (canonical == UNKNOWN_NAME)


def test_junk_names_never_make_more_than_one_name() -> None:
    names = {CAT.canonical(f"model-{i}-{'z' * i}") for i in range(2000)}
    assert names == {UNKNOWN_NAME}


def test_every_vision_model_is_complete() -> None:
    models = vision_models()
    assert {"gpt-4o", "gpt-4.1-mini", "gpt-5", "o4-mini", "computer-use-preview"} <= set(models)
    for name in models:
        spec = CAT.spec(name)
        assert spec.known and spec.vision is not None and spec.prices is not None
        assert spec.prices.input > 0 and spec.prices.output > spec.prices.input
        assert spec.prices.batch_discount == 0.5
        if spec.prices.cached_input is not None:
            assert spec.prices.cached_input < spec.prices.input
        assert spec.context_window and spec.max_output_tokens
        assert spec.max_output_tokens < spec.context_window
        assert spec.limits.tpm and spec.limits.rpm and spec.limits.ipm is None


def test_prices() -> None:
    assert CAT.cost_usd("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.50)
    assert CAT.cost_usd("gpt-4o-2024-08-06", 1_000_000, 0) == pytest.approx(2.50)
    assert CAT.cost_usd("gpt-4o", 1_000_000, 1_000_000, batch=True) == pytest.approx(6.25)
    # Cached input: 1M input of which 600k cached at gpt-4.1-mini's $0.10 instead of $0.40.
    cached = CAT.cost_usd("gpt-4.1-mini", 1_000_000, 0, cached_input_tokens=600_000)
    assert cached == pytest.approx(0.4 * 0.4 + 0.6 * 0.1)
    # A model without a cached price bills cached tokens as input.
    assert CAT.cost_usd("chatgpt-4o-latest", 1000, 0, cached_input_tokens=1000) == CAT.cost_usd(
        "chatgpt-4o-latest", 1000, 0
    )
    assert CAT.cost_usd("my-llava", 1000, 1000) is None
    assert CAT.cost_usd("gpt-image-1", 1000, 1000) is None  # priced per image: shared.image_models


def test_vision_rules_come_from_the_catalogue() -> None:
    assert image_tokens("gpt-4o", 1024, 1024, "high") == 765
    assert image_tokens("gpt-4o-2024-08-06", 1024, 1024, "high") == 765
    assert image_tokens("gpt-4o-mini", 1024, 1024, "low") == 2833
    assert image_tokens("gpt-4.1-mini", 1800, 2400) == 2353
    with pytest.raises(KeyError):
        image_tokens("my-llava", 10, 10)
    with pytest.raises(KeyError):
        image_tokens("gpt-image-1", 10, 10)  # an image-generation model has no vision rule


def test_capabilities_and_image_models() -> None:
    assert CAT.spec("computer-use-preview").capabilities == {"vision", "responses"}
    assert not CAT.spec("chatgpt-4o-latest").supports("structured_outputs")
    image = CAT.spec("gpt-image-1")
    assert image.capabilities == {"image_generation"} and image.vision is None
    assert image.limits.ipm == 5 and image.image_generation is not None
    dalle3 = CAT.spec("dall-e-3").image_generation
    assert dalle3 is not None and dalle3.max_n == 1 and dalle3.styles == ("vivid", "natural")
    assert CAT.spec("dall-e-3").limits.tpm is None


def test_unknown_policy() -> None:
    assert CAT.resolve("gpt-4o-2024-08-06", "refuse").name == "gpt-4o"
    assert CAT.resolve("my-llava", "accept") is UNKNOWN
    assert UNKNOWN.prices is None and UNKNOWN.context_window is None and not UNKNOWN.known
    with pytest.raises(NotFoundError) as info:
        CAT.resolve("my-llava" * 1000, "refuse")
    assert info.value.code == "model_not_found"
    assert "IMGQ_MODELS_FILE" in info.value.message
    assert len(info.value.message) < 400  # a hostile name is not echoed in full


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_operators_file_adds_and_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "my-llava": {
                "like": "gpt-4o",
                "capabilities": ["vision", "chat"],
                "prices": {"input": 0.2, "output": 0.6},
                "limits": {"tpm": 100_000},
                "context_window": 32_768,
                "max_output_tokens": 4096,
            },
            "free-model": {"vision": {"kind": "patch", "multiplier": 1.5}},
            "gpt-4o": {"limits": {"tpm": 800_000, "rpm": 5000}},
        },
    )
    cat = load_catalogue(path)
    llava = cat.spec("my-llava")
    assert llava.known and cat.canonical("my-llava-2025-01-01") == "my-llava"
    assert llava.vision == CAT.spec("gpt-4o").vision
    assert llava.capabilities == {"vision", "chat"}
    assert (llava.limits.tpm, llava.limits.rpm) == (100_000, 500)  # rpm from gpt-4o
    assert (llava.context_window, llava.max_output_tokens) == (32_768, 4096)
    assert cat.cost_usd("my-llava", 1_000_000, 1_000_000) == pytest.approx(0.8)
    free = cat.spec("free-model")
    assert free.known and cat.cost_usd("free-model", 10, 10) is None
    assert image_tokens(free.vision, 64, 64) == 6  # type: ignore[arg-type]
    gpt4o = cat.spec("gpt-4o")
    assert (gpt4o.limits.tpm, gpt4o.limits.rpm) == (800_000, 5000)
    assert gpt4o.prices == CAT.spec("gpt-4o").prices  # untouched fields stay
    assert load_catalogue(path) is cat  # loaded once
    assert CAT.find("my-llava") is None  # the built-in catalogue is not changed


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ([], "JSON object"),
        ({"bad name!": {}}, "names are"),
        ({"unknown": {}}, "names are"),
        ({"m": {"colour": "red"}}, "unknown fields"),
        ({"m": {"like": "gpt-99"}}, "not catalogued"),
        ({"m": {"vision": {"kind": "hexagon"}}}, "vision kind"),
        ({"m": {"prices": {"input": -1, "output": 1}}}, "negative"),
        ({"m": {"limits": {"tpm": 0}}}, "positive"),
        ({"m": {"limits": {"tokens": 5}}}, "limits"),
        ({"m": {"context_window": "big"}}, "context_window"),
        ({"m": {"capabilities": ["telepathy"]}}, "capabilities"),
        ({"m": {"vision": None}}, "needs a vision rule"),
    ],
)
def test_malformed_operators_file_says_where(tmp_path: Path, doc: object, needle: str) -> None:
    with pytest.raises(CatalogueError, match=needle):
        load_catalogue(_write(tmp_path, doc))


def test_unreadable_operators_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(CatalogueError, match="IMGQ_MODELS_FILE"):
        load_catalogue(bad)
    with pytest.raises(CatalogueError, match="IMGQ_MODELS_FILE"):
        load_catalogue(tmp_path / "missing.json")


def test_a_process_reads_its_file_from_the_environment(tmp_path: Path) -> None:
    """IMGQ_MODELS_FILE reaches every user of the process's catalogue: limiter, vision, metrics."""
    path = _write(tmp_path, {"my-llava": {"like": "gpt-4o", "limits": {"tpm": 123_000}}})
    code = (
        "from shared.limiter import LimitsConfig\n"
        "from shared.metrics import Metrics\n"
        "from shared.vision_tokens import image_tokens, is_known_model\n"
        "m = Metrics()\n"
        "m.jobs_total.labels(model='my-llava', api='chat', status='succeeded').inc()\n"
        "labels = {s.labels['model'] for f in m.registry.collect() for s in f.samples"
        " if s.name == 'imgq_jobs_total'}\n"
        "print(LimitsConfig().default_for('my-llava').tpm, is_known_model('my-llava'),"
        " image_tokens('my-llava', 1024, 1024, 'high'), sorted(labels))\n"
    )
    env = {"IMGQ_MODELS_FILE": str(path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["123000", "True", "765", "['my-llava']"]


def test_names_with_configured_limits_are_configured_models(tmp_path: Path) -> None:
    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps({"from-file": {"rpm": 60}}), encoding="utf-8")
    settings = Settings(
        model_limits='{"my-vllm": {"tpm": 1000}, "gpt-4o-2024-08-06": {"tpm": 5}}',
        limits_file=limits,
    )
    cat = catalogue_for(settings)
    assert cat.canonical("my-vllm") == "my-vllm" and cat.canonical("from-file") == "from-file"
    assert cat.resolve("my-vllm", "refuse").vision == UNKNOWN.vision
    assert cat.cost_usd("my-vllm", 10, 10) is None
    assert cat.canonical("gpt-4o-2024-08-06") == "gpt-4o"  # a snapshot stays its family
    assert cat.canonical("other") == UNKNOWN_NAME
    assert catalogue_for(settings) is cat  # built once per configuration
    assert catalogue_for(Settings(model_limits="{not json")).canonical("x") == UNKNOWN_NAME


def test_limiter_defaults_come_from_the_catalogue() -> None:
    cfg = LimitsConfig()
    assert cfg.default_for("gpt-4o-mini").tpm == CAT.spec("gpt-4o-mini").limits.tpm
    assert cfg.default_for("gpt-image-1").ipm == 5
    assert cfg.default_for(UNKNOWN_NAME).tpm == UNKNOWN.limits.tpm


def test_metric_model_label_is_the_canonical_name() -> None:
    m = Metrics()
    for name in ["gpt-4o", "gpt-4o-2024-08-06", "x" * 100_000, *(f"junk-{i}" for i in range(100))]:
        m.jobs_total.labels(model=name, api="chat", status="succeeded").inc()
    labels = {
        s.labels["model"]: s.value
        for fam in m.registry.collect()
        for s in fam.samples
        if s.name == "imgq_jobs_total"
    }
    assert labels == {"gpt-4o": 2.0, UNKNOWN_NAME: 101.0}


@pytest.mark.parametrize(
    "module",
    ["shared.catalogue", "shared.catalogue_types", "shared.admission", "shared.vision_tokens"],
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
