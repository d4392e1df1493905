"""``imgq estimate PATH... --model M [--detail D]``: tokens and cost per image, before any run.

Reads only image headers (no decoding), so it is instant even on a folder of 50 MB scans. A PATH
that is not a file but looks like ``1900x1900`` is taken as a size: "what will such a scan cost?".

    $ imgq estimate 1900x1900 --model gpt-4o --detail high
    image             size         sent   tokens  cost (USD)  batch (USD)
    1900x1900    1900x1900      768x768      765    0.001912     0.000956
    total (1 image, gpt-4o)                  765    0.001912     0.000956

Costs come from the model catalogue (``shared.catalogue``): online, and through the Batch API
(half price). A model without prices shows ``-``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from shared.catalogue import default_catalogue
from shared.errors import ImgqError
from shared.images.decode import open_image
from shared.images.formats import sniff
from shared.images.policy import ImagePolicy
from shared.images.resize import target_size
from shared.images.sources import parse_source
from shared.text_tokens import prompt_tokens
from shared.vision_tokens import Detail, image_tokens, is_known_model

_SIZE_RE = re.compile(r"^(\d{1,6})[xX\u00d7](\d{1,6})$")


@dataclass
class Row:
    image: str
    width: int = 0
    height: int = 0
    sent_width: int = 0
    sent_height: int = 0
    detail: str = ""
    tokens: int = 0  # image tokens
    input_tokens: int = 0  # image tokens + prompt text and framing (when --prompt is given)
    cost_usd: float | None = 0.0  # None: the model has no prices in the catalogue
    batch_cost_usd: float | None = 0.0
    error: str | None = None


def _expand(paths: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            out += sorted(
                str(f) for f in path.iterdir() if f.is_file() and sniff(f.read_bytes()[:64])
            )
        else:
            out.append(p)
    return out


def _size_of(item: str, policy: ImagePolicy) -> tuple[int, int]:
    m = _SIZE_RE.match(item)
    if m and not Path(item).exists():
        return int(m.group(1)), int(m.group(2))
    source = parse_source(Path(item), max_bytes=policy.max_bytes)
    assert hasattr(source, "data")
    return open_image(source.data, policy).display_size


def estimate_rows(
    items: list[str],
    *,
    model: str,
    detail: Detail,
    max_image_tokens: int | None = None,
    prompt: str | None = None,
    output_tokens: int = 0,
) -> list[Row]:
    """One row per image: its size, the size sent, tokens and cost (errors kept per row)."""
    policy = ImagePolicy()
    rows: list[Row] = []
    for item in items:
        try:
            w, h = _size_of(item, policy)
            tw, th, used = target_size(model, w, h, detail, max_image_tokens)
        except ImgqError as exc:
            rows.append(Row(item, error=f"{exc.code}: {exc.message}"))
            continue
        tokens = image_tokens(model, tw, th, used)
        total_in = prompt_tokens([prompt], [tokens]) if prompt else tokens
        cat = default_catalogue()
        cost = cat.cost_usd(model, total_in, output_tokens)
        batch = cat.cost_usd(model, total_in, output_tokens, batch=True)
        rows.append(Row(item, w, h, tw, th, used, tokens, total_in, cost, batch))
    return rows


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _total(values: list[float | None]) -> float | None:
    """The sum, or None when any row has no price."""
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _table(rows: list[Row], model: str) -> str:
    name_w = max([len("image"), *(len(r.image) for r in rows)])
    lines = [
        f"{'image':<{name_w}}  {'size':>11}  {'sent':>11}  {'tokens':>7}  {'cost (USD)':>10}"
        f"  {'batch (USD)':>11}"
    ]
    for r in rows:
        if r.error:
            lines.append(f"{r.image:<{name_w}}  error: {r.error}")
            continue
        size, sent = f"{r.width}x{r.height}", f"{r.sent_width}x{r.sent_height}"
        lines.append(
            f"{r.image:<{name_w}}  {size:>11}  {sent:>11}  {r.input_tokens:>7}"
            f"  {_usd(r.cost_usd):>10}  {_usd(r.batch_cost_usd):>11}"
        )
    ok = [r for r in rows if not r.error]
    total = f"total ({len(ok)} image{'s' if len(ok) != 1 else ''}, {model})"
    tokens = sum(r.input_tokens for r in ok)
    cost = _total([r.cost_usd for r in ok])
    batch = _total([r.batch_cost_usd for r in ok])
    lines.append(f"{total:<{name_w + 26}}  {tokens:>7}  {_usd(cost):>10}  {_usd(batch):>11}")
    return "\n".join(lines)


@click.command("estimate")
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "-m", default="gpt-4.1-mini", show_default=True)
@click.option(
    "--detail", "-d", type=click.Choice(["low", "high", "auto"]), default="auto", show_default=True
)
@click.option("--max-image-tokens", type=click.IntRange(min=1), default=None,
              help="Per-image token budget (images are shrunk to fit).")  # fmt: skip
@click.option(
    "--prompt", default=None, help="Count this prompt's tokens too (one request per image)."
)
@click.option("--output-tokens", type=click.IntRange(min=0), default=0, show_default=True,
              help="Output tokens to assume per image, priced at the output rate.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def estimate(
    paths: tuple[str, ...],
    model: str,
    detail: str,
    max_image_tokens: int | None,
    prompt: str | None,
    output_tokens: int,
    as_json: bool,
) -> None:
    """Tokens and cost per image and in total, before anything is sent.

    PATH is an image file, a folder of images, or a size such as 1900x1900.
    """
    if not is_known_model(model):
        raise click.BadParameter(
            f"no image token rules for {model!r}: not in the model catalogue"
            " (add it with IMGQ_MODELS_FILE)",
            param_hint="--model",
        )
    rows = estimate_rows(
        _expand(paths),
        model=model,
        detail=detail,  # type: ignore[arg-type]
        max_image_tokens=max_image_tokens,
        prompt=prompt,
        output_tokens=output_tokens,
    )
    ok = [r for r in rows if not r.error]
    if as_json:
        doc = {
            "model": model,
            "images": [asdict(r) for r in rows],
            "total_tokens": sum(r.input_tokens for r in ok),
            "total_cost_usd": _total([r.cost_usd for r in ok]),
            "total_batch_cost_usd": _total([r.batch_cost_usd for r in ok]),
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(_table(rows, model))
    if len(ok) != len(rows):
        raise SystemExit(1)
