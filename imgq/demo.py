"""`imgq demo`: the whole pipeline on embedded defaults, from a fresh machine, then shut down.

Starts its own Redis when ``IMGQ_REDIS_URL`` is unset (append-only file in
``<IMGQ_DATA_DIR>/demo/redis``: what Redis held survives a crash and restart), the simulator when
``OPENAI_API_KEY`` is unset (a real OpenAI or OpenAI-compatible endpoint when it is set), two worker
processes; submits the bundled sample images; shows progress, a results table and a metrics
summary; stops everything it started. Logs go to ``<IMGQ_DATA_DIR>/demo/logs``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click

from imgq.inputs import expand_inputs
from shared.embedded_redis import EmbeddedRedis, free_port, wait_for_port
from shared.jobs import Result
from shared.settings import Settings

SAMPLES = Path(__file__).parent / "samples"
PROMPT = "Describe this image in one sentence."


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # Celery: warm shutdown
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _scrape(port: int) -> dict[str, float]:
    """A few totals from one worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return totals
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in (
                "imgq_api_requests_total",
                "imgq_rate_limited_total",
                "imgq_retries_total",
            ):
                totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals


def _table(results: list[Result]) -> None:
    click.echo(f"\n{'source':<26} {'status':<10} {'tokens':>7} {'cost $':>9}  answer / error")
    click.echo("-" * 100)
    for r in sorted(results, key=lambda r: str(r.sources)):
        src = Path(r.sources[0]).name if r.sources and r.sources[0] else r.job_id[:12]
        if r.error:
            text = f"{r.error.code}: {r.error.message}"
        else:
            text = (r.output_text or "").splitlines()[-1] if r.output_text else ""
        tokens = r.usage.input_tokens + r.usage.output_tokens
        cost = "-" if r.cost_usd is None else f"{r.cost_usd:.5f}"  # None: the price is unknown
        click.echo(f"{src:<26} {r.status:<10} {tokens:>7} {cost:>9}  {text[:52]}")


def _summary(results: list[Result], wall: float, worker_ports: list[int]) -> None:
    ok = [r for r in results if r.status == "succeeded"]
    api = [r.timings.api_seconds for r in ok if r.timings.api_seconds]
    e2e = [
        r.timings.finished_at - r.timings.queued_at
        for r in ok
        if r.timings.finished_at and r.timings.queued_at
    ]
    scraped: dict[str, float] = {}
    for port in worker_ports:
        for k, v in _scrape(port).items():
            scraped[k] = scraped.get(k, 0.0) + v
    click.echo("\nmetrics summary")
    click.echo(f"  jobs: {len(results)} ({len(ok)} succeeded, {len(results) - len(ok)} failed)"
               f" in {wall:.1f}s")  # fmt: skip
    click.echo(f"  tokens: input {sum(r.usage.input_tokens for r in ok)},"
               f" output {sum(r.usage.output_tokens for r in ok)},"
               f" of which image {sum(r.usage.image_tokens for r in ok)}")  # fmt: skip
    unknown = sum(r.cost_usd is None for r in ok)  # a model with no configured price
    note = f" ({unknown} succeeded jobs without a known price)" if unknown else ""
    click.echo(f"  cost: ${sum(r.cost_usd or 0.0 for r in results):.5f}{note}")
    if api:
        click.echo(f"  API latency p50 {statistics.median(api) * 1000:.0f} ms;"
                   f" submit->result p50 {statistics.median(e2e) * 1000:.0f} ms")  # fmt: skip
    click.echo(
        f"  API requests {scraped.get('imgq_api_requests_total', 0):.0f},"
        f" 429s {scraped.get('imgq_rate_limited_total', 0):.0f},"
        f" retries {scraped.get('imgq_retries_total', 0):.0f} (from the workers' /metrics)"
    )


def _wait_for_workers(settings: Settings, broker_url: str, n: int, timeout: float = 60.0) -> None:
    """Until ``n`` workers answer a control ping, so timings show the pipeline, not start-up."""
    from shared.broker import create_celery

    app = create_celery(settings, broker_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if len(app.control.ping(timeout=0.5) or []) >= n:
                return
        raise click.ClickException(f"{n} workers did not start within {timeout:.0f}s")
    finally:
        app.close()


def run_demo(settings: Settings, *, workers: int = 2, image_dir: str | None = None) -> int:
    from producer.client import Client, SubmitRequest

    env = dict(os.environ)
    stack = contextlib.ExitStack()
    logs = settings.data_dir / "demo" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with stack:
        redis_url = settings.redis_url
        if not redis_url:
            redis_dir = settings.data_dir / "demo" / "redis"
            redis_url = stack.enter_context(EmbeddedRedis(data_dir=redis_dir)).url
            click.echo(f"Redis: embedded, {redis_url}")
        env["IMGQ_REDIS_URL"] = redis_url
        if settings.openai_api_key is None:
            port = free_port()
            sim_cmd = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port",
                       str(port), "--latency-ms", "400", "--jitter-ms", "200", "--tpm", "400000",
                       "--rpm", "5000", "--seed", "1"]  # fmt: skip
            stack.enter_context(_process(sim_cmd, env, logs / "simulator.log"))
            wait_for_port("127.0.0.1", port, timeout=20)
            env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
            env["OPENAI_API_KEY"] = "sk-imgq-simulator"
            click.echo(f"Backend: the imgq simulator at {env['OPENAI_BASE_URL']}"
                       " (OPENAI_API_KEY is unset)")  # fmt: skip
        else:
            where = settings.openai_base_url or "https://api.openai.com/v1"
            click.echo(f"Backend: OpenAI-compatible endpoint {where} (OPENAI_API_KEY is set)")
        ports = [free_port() for _ in range(workers)]
        for i, mport in enumerate(ports):
            wenv = dict(env, IMGQ_METRICS_PORT=str(mport))
            cmd = [sys.executable, "-m", "imgq.cli", "worker", "-c", "32", "-n",
                   f"demo{i}@%h", "-l", "WARNING"]  # fmt: skip
            stack.enter_context(_process(cmd, wenv, logs / f"worker{i}.log"))
        run_settings = settings.model_copy(update={"redis_url": redis_url})
        _wait_for_workers(run_settings, run_settings.effective_broker_url or redis_url, workers)
        click.echo(f"Workers: {workers} processes ready (logs in {logs}/)")
        sources = list(expand_inputs((image_dir or str(SAMPLES),)))
        started = time.monotonic()
        with Client(run_settings) as client:
            ids = client.submit_many(
                SubmitRequest(images=[s], prompt=PROMPT, metadata={"source": s}) for s in sources
            )
            click.echo(f"Submitted {len(ids)} jobs from {image_dir or SAMPLES}")
            results: list[Result] = []
            with click.progressbar(length=len(ids), label="processing") as bar:
                for r in client.as_completed(ids, timeout=300):
                    results.append(r)
                    bar.update(1)
        wall = time.monotonic() - started
        _table(results)
        _summary(results, wall, ports)
        click.echo("\nShutting down workers, simulator and Redis...")
    expected_failures = sum(1 for s in sources if Path(s).name == "not-an-image.png")
    failed = sum(r.status == "failed" for r in results)
    return 0 if failed <= expected_failures else 1
