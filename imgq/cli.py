"""The `imgq` command line: workers, submitting, results, the demo, the simulator and tools.

An entry point: it may start what the library never does on its own (the embedded Redis when
``IMGQ_REDIS_URL`` is unset, worker processes, the simulator). Every heavy import happens inside
the command that needs it, so ``imgq --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from imgq.inputs import expand_inputs
from imgq.lazy_group import LazyGroup

if TYPE_CHECKING:
    from shared.jobs import Result
    from shared.settings import Settings


def _settings(*, embedded_redis: bool = True) -> Settings:
    """Settings from the environment; with IMGQ_REDIS_URL unset, the shared embedded Redis."""
    from shared.embedded_redis import with_embedded_redis
    from shared.settings import Settings

    settings = Settings()
    return with_embedded_redis(settings) if embedded_redis else settings


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imgq")
def main() -> None:
    """imgq: image jobs -> OpenAI vision results, at fleet-wide TPM/RPM limits.

    Configuration comes from the environment: IMGQ_REDIS_URL (unset: an embedded Redis, kept in
    IMGQ_DATA_DIR), IMGQ_BROKER_URL, OPENAI_API_KEY, OPENAI_BASE_URL, IMGQ_MODEL_LIMITS,
    IMGQ_METRICS_PORT, IMGQ_LOG_LEVEL.
    """


# -- commands that live in their own modules -----------------------------------------------------
# One line per command: name, "module:click_command", the short help shown by `imgq --help`.
# The module is imported only when the command runs (or its own --help is asked for). A command
# that needs Redis gets it with `with_embedded_redis(Settings())` (shared/embedded_redis.py).
main.add_lazy_command("sim", "simulator.cli:sim", "Run the OpenAI-compatible simulator.")
main.add_lazy_command("estimate", "producer.estimate:estimate", "Tokens and cost per image, before any run.")  # fmt: skip
main.add_lazy_command("limits", "producer.limits_cmd:limits", "Show the fleet-wide limits and their use.")  # fmt: skip
main.add_lazy_command("dlq", "producer.dlq_cmd:dlq", "Dead-lettered jobs: list, show, retry, purge.")  # fmt: skip
main.add_lazy_command("generate", "producer.generate_cmd:generate", "Make images from a prompt (gpt-image-1, DALL·E).")  # fmt: skip
main.add_lazy_command("edit", "producer.generate_cmd:edit", "Edit images (optional mask) as a prompt says.")  # fmt: skip
main.add_lazy_command("keys", "producer.keys_cmd:keys", "API keys per tenant: create, list, revoke, usage.")  # fmt: skip
main.add_lazy_command("batches", "producer.batches_cmd:batches", "Batch API batches: list, show, cancel, flush.")  # fmt: skip


@main.command()
@click.option("--concurrency", "-c", type=int, default=None, help="Jobs in progress at once.")
@click.option("--queues", "-Q", default="interactive,bulk", show_default=True,
              help="Queues to consume, highest priority first.")  # fmt: skip
@click.option("--loglevel", "-l", default=None, help="Log level (default: IMGQ_LOG_LEVEL, INFO).")
@click.option("--hostname", "-n", default=None, help="Celery node name.")
def worker(
    concurrency: int | None, queues: str, loglevel: str | None, hostname: str | None
) -> None:
    """Run a worker process (Celery threads pool + one asyncio loop)."""
    from workers.main import run_worker

    run_worker(
        _settings(),
        concurrency=concurrency,
        queues=tuple(q.strip() for q in queues.split(",") if q.strip()),
        loglevel=loglevel,
        hostname=hostname,
    )


def _report_skip(path: Path, why: str) -> None:
    click.echo(f"skipped {path}: {why}", err=True)


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
@click.option("--route", type=click.Choice(["online", "batch", "auto"]), default="online",
              show_default=True, help="batch: OpenAI's Batch API, half price, within 24 h.")  # fmt: skip
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON schema file for structured output.")  # fmt: skip
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Fail a job not finished this long after submit (expired); "
              "default IMGQ_JOB_DEADLINE_SECONDS, at most the image TTL.")  # fmt: skip
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
    route: str,
    schema_file: str | None,
    deadline: float | None,
    together: bool,
    wait_: bool,
    timeout: float | None,
    output: str | None,
) -> None:
    """Submit images (files, folders, http(s) or s3:// URLs) as jobs; prints the job ids.

    A folder gives its image files (by extension, not recursive); what it skips is named on
    stderr with the reason.
    """
    from producer.client import Client, SubmitRequest

    sources = list(expand_inputs(inputs, on_skip=_report_skip))
    if not sources:
        raise click.UsageError("no images found in the given inputs")
    schema = json.loads(Path(schema_file).read_text()) if schema_file else None
    common: dict[str, Any] = dict(
        prompt=prompt, model=model, detail=detail, api=api, max_output_tokens=max_output_tokens,
        priority=priority, json_schema=schema, route=route, deadline_seconds=deadline,
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


def _get(job_id: str) -> Result:
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
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Save a generate/edit job's images into this folder.")  # fmt: skip
def result(job_id: str, out_dir: str | None) -> None:
    """Print a job's result as JSON (with --out: save its generated images, print their paths)."""
    r = _get(job_id)
    if out_dir is None:
        click.echo(r.model_dump_json(indent=2))
        return
    if r.status != "succeeded":
        raise click.ClickException(f"job {job_id} is {r.status}: no images to save")
    from producer.client import Client

    with Client(_settings()) as client:
        for path in client.save_images(job_id, out_dir):
            click.echo(str(path))


@main.command()
@click.option("--workers", "n_workers", type=int, default=2, show_default=True)
@click.option("--images", "image_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of images (default: the bundled samples).")  # fmt: skip
def demo(n_workers: int, image_dir: str | None) -> None:
    """Run the whole pipeline on embedded defaults and show the results."""
    from imgq.demo import run_demo

    # The demo starts its own Redis (persistent in IMGQ_DATA_DIR) when IMGQ_REDIS_URL is unset.
    sys.exit(run_demo(_settings(embedded_redis=False), workers=n_workers, image_dir=image_dir))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=int, show_default=True)
@click.option("--loglevel", "-l", default=None, help="Log level (default: IMGQ_LOG_LEVEL, INFO).")
def api(host: str, port: int, loglevel: str | None) -> None:
    """Serve the HTTP API (submit jobs, read results)."""
    import logging

    from producer.api import run_api

    settings = _settings()
    logging.basicConfig(level=(loglevel or settings.log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")  # fmt: skip
    run_api(settings, host=host, port=port)


if __name__ == "__main__":  # pragma: no cover
    main()
