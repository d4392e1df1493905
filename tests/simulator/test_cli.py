"""`imgq sim --help` documents every flag; bad combinations are usage errors."""

from __future__ import annotations

from click.testing import CliRunner

from simulator.cli import sim

FLAGS = (
    "--host",
    "--port",
    "--tpm",
    "--rpm",
    "--latency-ms",
    "--jitter-ms",
    "--fail-rate",
    "--reset-rate",
    "--slow-rate",
    "--slow-ms",
    "--stream-chunk-ms",
    "--stream-cut-rate",
    "--seed",
    "--insufficient-quota",
    "--default-max-tokens",
    "--api-key",
    "--max-image-mb",
    "--max-request-image-mb",
    "--max-images",
    "--extra-model",
    "--ipm",
    "--batch",
    "--log-level",
)


def test_help_documents_every_flag() -> None:
    result = CliRunner().invoke(sim, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in FLAGS:
        assert flag in result.output, flag
    options = {opt for param in sim.params for opt in param.opts}
    assert options <= set(FLAGS) | {"--help", "-h"}
    assert all(param.help for param in sim.params if hasattr(param, "help")), "every flag has help"


def test_invalid_values_are_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(sim, ["--fail-rate", "1.5"]).exit_code == 2
    result = runner.invoke(sim, ["--fail-rate", "0.6", "--reset-rate", "0.6"])
    assert result.exit_code == 2
    assert "must not exceed 1" in result.output
