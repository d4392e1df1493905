"""The `imgq` command line: workers, submitting, results, the demo, the simulator and tools."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".heic", ".heif", ".avif", ".tif",
                  ".tiff", ".bmp"}  # fmt: skip


def _settings() -> Any:
    from shared.settings import Settings

    return Settings()


def expand_inputs(items: tuple[str, ...]) -> Iterator[str]:
    """Paths and URLs as given; a folder becomes every image file in it (sorted, not hidden)."""
    for item in items:
        path = Path(item)
        if "://" not in item and path.is_dir():
            for child in sorted(path.iterdir()):
                if (
                    child.is_file()
                    and not child.name.startswith(".")
                    and (child.suffix.lower() in IMAGE_SUFFIXES)
                ):
                    yield str(child)
        else:
            yield item


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imgq")
def main() -> None:
    """imgq: image jobs -> OpenAI vision results, at fleet-wide TPM/RPM limits.

    Configuration comes from the environment: IMGQ_REDIS_URL (unset: an embedded Redis),
    IMGQ_BROKER_URL, OPENAI_API_KEY, OPENAI_BASE_URL, IMGQ_MODEL_LIMITS, IMGQ_METRICS_PORT.
    """


@main.command()
@click.option("--concurrency", "-c", type=int, default=None, help="Jobs in progress at once.")
@click.option("--queues", "-Q", default="interactive,bulk", show_default=True,
              help="Queues to consume, highest priority first.")  # fmt: skip
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--hostname", "-n", default=None, help="Celery node name.")
def worker(concurrency: int | None, queues: str, loglevel: str, hostname: str | None) -> None:
    """Run a worker process (Celery threads pool + one asyncio loop)."""
    from workers.main import run_worker

    run_worker(
        _settings(),
        concurrency=concurrency,
        queues=tuple(q.strip() for q in queues.split(",") if q.strip()),
        loglevel=loglevel,
        hostname=hostname,
    )


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--prompt", "-p", required=True, help="What to ask about each image.")
@click.option("--model", "-m", default=None, help="Model (default: IMGQ_DEFAULT_MODEL).")
@click.option("--detail", type=click.Choice(["low", "high", "auto"]), default="auto",
              show_default=True)  # fmt: skip
@click.option("--api", type=click.Choice(["chat", "responses"]), default="chat", show_default=True)
@click.option("--max-output-tokens", type=int, default=None)
@click.option("--priority", type=click.Choice(["interactive", "bulk"]), default="interactive",
              show_default=True)  # fmt: skip
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON schema file for structured output.")  # fmt: skip
@click.option("--together", is_flag=True, help="One job with all images, not one job each.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the results (progress bar).")
@click.option("--timeout", type=float, default=None, help="Seconds to wait at most.")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write results as JSONL (implies --wait).")  # fmt: skip
def submit(
    inputs: tuple[str, ...],
    prompt: str,
    model: str | None,
    detail: str,
    api: str,
    max_output_tokens: int | None,
    priority: str,
    schema_file: str | None,
    together: bool,
    wait_: bool,
    timeout: float | None,
    output: str | None,
) -> None:
    """Submit images (files, folders, http(s) or s3:// URLs) as jobs; prints the job ids."""
    from producer.client import Client, SubmitRequest

    sources = list(expand_inputs(inputs))
    if not sources:
        raise click.UsageError("no images found in the given inputs")
    schema = json.loads(Path(schema_file).read_text()) if schema_file else None
    common: dict[str, Any] = dict(
        prompt=prompt, model=model, detail=detail, api=api, max_output_tokens=max_output_tokens,
        priority=priority, json_schema=schema,
    )  # fmt: skip
    groups = [sources] if together else [[s] for s in sources]
    with Client(_settings()) as client:
        ids = client.submit_many(
            SubmitRequest(images=g, metadata={"source": g[0] if len(g) == 1 else g}, **common)
            for g in groups
        )
        if not (wait_ or output):
            for job_id in ids:
                click.echo(job_id)
            return
        by_id = dict(zip(ids, groups, strict=True))
        out = open(output, "w") if output else None  # noqa: SIM115 - closed below
        failed = 0
        try:
            with click.progressbar(length=len(ids), label="jobs", file=sys.stderr) as bar:
                for r in client.as_completed(ids, timeout=timeout):
                    bar.update(1)
                    failed += r.status == "failed"
                    doc = r.model_dump(mode="json")
                    g = by_id[r.job_id]
                    doc["source"] = g[0] if len(g) == 1 else g
                    line = json.dumps(doc)
                    if out:
                        out.write(line + "\n")
                    else:
                        click.echo(line)
        except TimeoutError:
            raise click.ClickException(
                f"gave up waiting after {timeout:g}s; the jobs go on (imgq status JOB_ID)"
            ) from None
        finally:
            if out:
                out.close()
        click.echo(f"{len(ids) - failed} succeeded, {failed} failed", err=True)
        if failed:
            sys.exit(1)


def _get(job_id: str) -> Any:
    from producer.client import Client

    with Client(_settings()) as client:
        r = client.get(job_id)
    if r is None:
        raise click.ClickException(f"no job {job_id}")
    return r


@main.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show a job's status (and error code, if it failed)."""
    r = _get(job_id)
    extra = f" {r.error.code}: {r.error.message}" if r.error else ""
    click.echo(f"{r.job_id} {r.status} attempts={r.attempts}{extra}")


@main.command()
@click.argument("job_id")
def result(job_id: str) -> None:
    """Print a job's result as JSON."""
    click.echo(_get(job_id).model_dump_json(indent=2))


@main.command()
@click.option("--workers", "n_workers", type=int, default=2, show_default=True)
@click.option("--images", "image_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of images (default: the bundled samples).")  # fmt: skip
def demo(n_workers: int, image_dir: str | None) -> None:
    """Run the whole pipeline on embedded defaults and show the results."""
    from producer.demo import run_demo

    sys.exit(run_demo(_settings(), workers=n_workers, image_dir=image_dir))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=int, show_default=True)
def api(host: str, port: int) -> None:
    """Serve the HTTP API (submit jobs, read results)."""
    from producer.api import run_api

    run_api(_settings(), host=host, port=port)


def _register_optional() -> None:
    # Commands that live in their own modules; imported lazily so `imgq --help` stays fast.
    from producer.estimate import estimate
    from producer.limits_cmd import limits
    from simulator.cli import sim

    main.add_command(sim, "sim")
    main.add_command(estimate, "estimate")
    main.add_command(limits, "limits")


_register_optional()

if __name__ == "__main__":  # pragma: no cover
    main()
