"""``imgq generate`` and ``imgq edit``: image generation and edit jobs from the command line.

Without ``--out`` the job id is printed and the job runs on the workers; with ``--out DIR`` the
command waits and writes the images as ``DIR/<job_id>-<i>.<ext>`` (``imgq result JOB --out DIR``
does the same later). Options the chosen model does not take are refused at once, no API call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

_IMAGE_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--model", "-m", default="gpt-image-1", show_default=True,
                 help="gpt-image-1, dall-e-3 or dall-e-2."),
    click.option("--n", "-n", "n", type=int, default=1, show_default=True, help="Images to make."),
    click.option("--size", default=None, help="e.g. 1024x1024, 1536x1024, 1024x1536, auto."),
    click.option("--quality", default=None, help="low|medium|high|auto (DALL·E: standard|hd)."),
    click.option("--background", default=None, help="transparent|opaque|auto (gpt-image-1)."),
    click.option("--format", "output_format", default=None, help="png|jpeg|webp (gpt-image-1)."),
    click.option("--compression", "output_compression", type=int, default=None,
                 help="0-100, jpeg/webp only (gpt-image-1)."),
    click.option("--moderation", default=None, help="auto|low (gpt-image-1 generations)."),
    click.option("--style", default=None, help="vivid|natural (dall-e-3)."),
    click.option("--priority", type=click.Choice(["interactive", "bulk"]), default="interactive",
                 show_default=True),
    click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
                 help="Wait, then save the images into this folder."),
    click.option("--timeout", type=float, default=300.0, show_default=True,
                 help="Seconds to wait with --out."),
]  # fmt: skip


def _image_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_IMAGE_OPTIONS):
        fn = option(fn)
    return fn


def _client() -> Any:
    from producer.client import Client
    from shared.embedded_redis import with_embedded_redis
    from shared.settings import Settings

    return Client(with_embedded_redis(Settings()))


def _fail(result: Any) -> None:
    error = result.error
    detail = f": {error.code}: {error.message}" if error else ""
    click.echo(f"{result.job_id} failed{detail}", err=True)
    sys.exit(1)


def _finish(client: Any, job_id: str, out_dir: str | None, timeout: float) -> None:
    submitted = client.get(job_id)
    if submitted is not None and submitted.status == "failed":  # refused at submit
        _fail(submitted)
    if out_dir is None:
        click.echo(job_id)
        return
    try:
        result = client.wait(job_id, timeout=timeout)
    except TimeoutError:
        raise click.ClickException(
            f"gave up waiting after {timeout:g}s; the job goes on: imgq result {job_id} --out DIR"
        ) from None
    if result.status != "succeeded":
        _fail(result)
    for path in client.save_images(job_id, Path(out_dir)):
        click.echo(str(path))


@click.command()
@click.argument("prompt")
@click.option("--responses-model", default=None,
              help="Draw through the Responses API's image_generation tool on this model "
                   "(e.g. gpt-4.1-mini; one image per job).")  # fmt: skip
@_image_options
def generate(
    prompt: str, out_dir: str | None, timeout: float, priority: str, **options: Any
) -> None:
    """Make images from PROMPT (a generate job); prints the job id, or the saved files with --out."""
    with _client() as client:
        job_id = client.generate(prompt, priority=priority, **options)
        _finish(client, job_id, out_dir, timeout)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--prompt", "-p", required=True, help="What to change.")
@click.option("--mask", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PNG with alpha, the size of the first image: transparent = edit here.")  # fmt: skip
@_image_options
def edit(
    images: tuple[str, ...],
    prompt: str,
    mask: str | None,
    out_dir: str | None,
    timeout: float,
    priority: str,
    **options: Any,
) -> None:
    """Edit IMAGES (files) as PROMPT says (an edit job); prints the job id, or files with --out."""
    with _client() as client:
        job_id = client.edit(
            [Path(i) for i in images], prompt, mask=Path(mask) if mask else None,
            priority=priority, **options,
        )  # fmt: skip
        _finish(client, job_id, out_dir, timeout)
