"""``imgq sim`` / ``python -m simulator``: run the OpenAI-compatible simulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal

import click

from simulator.config import MB, SimConfig

log = logging.getLogger("simulator")


def _raise_fd_limit() -> None:
    # 1,000+ concurrent connections need more descriptors than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard > 0 else soft, hard))


async def _run(config: SimConfig, host: str, port: int) -> None:
    from simulator.app import create_app, serve

    runner = await serve(create_app(config), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "simulator listening on http://%s:%d/v1 (tpm=%d rpm=%d)", host, port, config.tpm, config.rpm
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@click.command(
    name="sim", context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.option("--host", default="127.0.0.1", help="Interface to listen on.")
@click.option("--port", default=8400, type=int, help="TCP port to listen on.")
@click.option(
    "--tpm",
    default=30_000,
    type=click.IntRange(min=1),
    help="Tokens per minute per model (bucket refilled continuously at tpm/60 per s).",
)
@click.option(
    "--rpm",
    default=500,
    type=click.IntRange(min=1),
    help="Requests per minute per model (bucket refilled continuously).",
)
@click.option(
    "--latency-ms",
    default=800.0,
    type=click.FloatRange(min=0),
    help="Mean answer latency; 0 answers at once.",
)
@click.option(
    "--jitter-ms",
    default=300.0,
    type=click.FloatRange(min=0),
    help="Latency is uniform in latency +/- jitter (jitter capped at latency).",
)
@click.option(
    "--fail-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of admitted requests answered 500 or 503 with OpenAI's bodies.",
)
@click.option(
    "--reset-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of admitted requests whose connection is dropped with no answer.",
)
@click.option(
    "--slow-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of admitted requests answered only after --slow-ms.",
)
@click.option(
    "--slow-ms",
    default=600_000.0,
    type=click.FloatRange(min=0),
    help="Delay of a --slow-rate answer (far beyond any sane client timeout).",
)
@click.option(
    "--stream-chunk-ms",
    default=0.0,
    type=click.FloatRange(min=0),
    help="Pause between the chunks of a streamed answer (0: all at once).",
)
@click.option(
    "--stream-cut-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of streamed answers whose connection drops halfway through.",
)
@click.option(
    "--seed",
    default=None,
    type=int,
    help="Seed for latency jitter and faults (same seed, same sequence).",
)
@click.option(
    "--insufficient-quota",
    is_flag=True,
    help="Answer every request with a 429 insufficient_quota (never worth retrying).",
)
@click.option(
    "--default-max-tokens",
    default=4096,
    type=click.IntRange(min=1),
    help="Output tokens charged at admission when a request sets no max tokens.",
)
@click.option(
    "--api-key",
    default=None,
    envvar="IMGQ_SIM_API_KEY",
    show_envvar=True,
    help="Accept only this Bearer key (default: any non-empty key).",
)
@click.option(
    "--max-image-mb",
    default=20.0,
    type=click.FloatRange(min=0),
    help="Largest accepted image (OpenAI: 20 MB).",
)
@click.option(
    "--max-request-image-mb",
    default=50.0,
    type=click.FloatRange(min=0),
    help="Largest total of images in one request (OpenAI: 50 MB).",
)
@click.option(
    "--max-images",
    default=500,
    type=click.IntRange(min=1),
    help="Most images in one request (OpenAI: 500).",
)
@click.option(
    "--ipm",
    default=50,
    type=click.IntRange(min=1),
    help="Images per minute per image model (Images API).",
)
@click.option(
    "--extra-model",
    "extra_models",
    multiple=True,
    help="Also serve this model name (repeatable), like an OpenAI-compatible server's own.",
)
@click.option(
    "--batch",
    "batch_json",
    default=None,
    help='Batch API timing and faults as JSON, e.g. \'{"progress_s": 60, "expire_next": 1}\''
    " (fields: GET /_sim/batch; change them live with POST /_sim/batch).",
)
@click.option(
    "--log-level",
    default="INFO",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Logging level (requests are not logged one by one).",
)
def sim(
    host: str,
    port: int,
    tpm: int,
    rpm: int,
    latency_ms: float,
    jitter_ms: float,
    fail_rate: float,
    reset_rate: float,
    slow_rate: float,
    slow_ms: float,
    stream_chunk_ms: float,
    stream_cut_rate: float,
    seed: int | None,
    insufficient_quota: bool,
    default_max_tokens: int,
    api_key: str | None,
    max_image_mb: float,
    max_request_image_mb: float,
    max_images: int,
    ipm: int,
    extra_models: tuple[str, ...],
    batch_json: str | None,
    log_level: str,
) -> None:
    """Run an OpenAI-compatible simulator: chat completions, responses, models.

    It bills image and text tokens exactly as OpenAI does, enforces TPM/RPM with OpenAI's 429s
    and x-ratelimit-* headers, injects faults, and reports what it saw at GET /_sim/stats
    (POST /_sim/reset clears it). Point the SDK at it with base_url=http://HOST:PORT/v1.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        config = SimConfig(
            tpm=tpm,
            rpm=rpm,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            fail_rate=fail_rate,
            reset_rate=reset_rate,
            slow_rate=slow_rate,
            slow_ms=slow_ms,
            stream_chunk_ms=stream_chunk_ms,
            stream_cut_rate=stream_cut_rate,
            seed=seed,
            insufficient_quota=insufficient_quota,
            default_max_tokens=default_max_tokens,
            api_key=api_key,
            max_image_bytes=int(max_image_mb * MB),
            max_request_image_bytes=int(max_request_image_mb * MB),
            max_images=max_images,
            batch_json=batch_json,
            ipm=ipm,
            extra_models=tuple(extra_models),
        )
        from simulator.batch_state import settings_from_json

        settings_from_json(batch_json)  # a bad --batch is a usage error, not a crash later
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _raise_fd_limit()
    asyncio.run(_run(config, host, port))
