"""The simulator's settings, shared by the CLI (`imgq sim`) and the in-process API.

>>> SimConfig(tpm=30_000, rpm=500).tokens_per_second
500.0
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class SimConfig:
    """How the simulated OpenAI behaves; every field has a CLI flag of the same name."""

    tpm: int = 30_000
    rpm: int = 500
    latency_ms: float = 800.0
    # Each answer's latency is uniform in [latency - j, latency + j] with j = min(jitter, latency):
    # the mean is latency_ms, and latency_ms=0 answers at once whatever the jitter.
    jitter_ms: float = 300.0
    fail_rate: float = 0.0
    reset_rate: float = 0.0
    slow_rate: float = 0.0
    # "Far slower than any sane client timeout": 10 minutes by default.
    slow_ms: float = 600_000.0
    seed: int | None = None
    insufficient_quota: bool = False
    # Charged at admission when a request sets no max_tokens / max_completion_tokens /
    # max_output_tokens (OpenAI reserves the model's output budget; we make it explicit).
    default_max_tokens: int = 4096
    # When set, only this key is accepted; otherwise any non-empty Bearer key is.
    api_key: str | None = None
    max_image_bytes: int = 20 * MB
    max_request_image_bytes: int = 50 * MB
    max_images: int = 500
    # Model names served besides the catalogue's, as an OpenAI-compatible server serves its own
    # (images billed with the catalogue's unknown-model rule, gpt-4o's tiles).
    extra_models: tuple[str, ...] = ()
    # Batch API timing and faults (simulator/batch_state.py BatchSimSettings) as a JSON object.
    batch_json: str | None = None
    # Timeout for fetching loopback image URLs.
    fetch_timeout_s: float = 10.0
    # Images per minute per image model (Images API; bucket refilled continuously).
    ipm: int = 50
    # Streams (stream=true): the pause between two chunks (0: all at once), and the share of
    # streamed answers whose connection drops halfway through (headers and some text sent).
    stream_chunk_ms: float = 0.0
    stream_cut_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.tpm <= 0 or self.rpm <= 0:
            raise ValueError("tpm and rpm must be positive")
        for name in ("fail_rate", "reset_rate", "slow_rate", "stream_cut_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.fail_rate + self.reset_rate + self.slow_rate > 1.0:
            raise ValueError("fail_rate + reset_rate + slow_rate must not exceed 1")
        if min(self.latency_ms, self.jitter_ms, self.slow_ms, self.stream_chunk_ms) < 0:
            raise ValueError("latencies must not be negative")

    @property
    def tokens_per_second(self) -> float:
        return self.tpm / 60.0

    @property
    def requests_per_second(self) -> float:
        return self.rpm / 60.0
