"""``imgq limits``: per model, the limit in force, the bucket's level and refill, calls in flight,
the fleet queue's waiters, and any fleet-wide cooldown — read from the limiter's state in Redis.

    $ imgq limits
    MODEL         ACCOUNT           TPM   SOURCE      LEVEL  REFILL/S  FULL IN  RESERVED  WAITING I/B  RPM  REQ LEVEL  COOLDOWN
    gpt-4.1-mini  3f2a9c0d11e4b7a2  6000  discovered  1190   100.0     48.1s    600       3/40         60   37.0       -
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from shared.limiter import LimitKey, LimitsConfig, LimitSnapshot, RedisLimiter, key_fingerprint


async def collect(
    redis_url: str, config: LimitsConfig, account: str, models: tuple[str, ...]
) -> list[LimitSnapshot]:
    """Snapshots of every limit in the registry, plus this account's configured/asked models."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        limiter = RedisLimiter(client, config)
        keys = set(await limiter.known_keys())
        keys |= {LimitKey(m, account) for m in (*config.configured, *models)}
        if models:
            keys = {k for k in keys if k.model in models}
        return [await limiter.snapshot(k) for k in sorted(keys, key=lambda k: (k.model, k.account))]
    finally:
        await client.aclose()


def render_table(snaps: list[LimitSnapshot]) -> str:
    head = ("MODEL", "ACCOUNT", "TPM", "SOURCE", "LEVEL", "REFILL/S", "FULL IN", "RESERVED",
            "WAITING I/B", "RPM", "REQ LEVEL", "COOLDOWN")  # fmt: skip
    rows = [head] + [
        (
            s.key.model,
            s.key.account,
            str(s.tpm),
            s.tpm_source,
            f"{s.tokens_level:.0f}",
            f"{s.tokens_refill_per_s:.1f}",
            f"{s.seconds_to_full():.1f}s",
            str(s.tokens_reserved),
            f"{s.waiting_interactive}/{s.waiting_bulk}",
            str(s.rpm),
            f"{s.requests_level:.1f}",
            f"{s.cooldown_s:.1f}s" if s.cooldown_s > 0 else "-",
        )
        for s in snaps
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)  # fmt: skip


@click.command(name="limits")
@click.option("--model", "models", multiple=True, help="Only this model (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per limit, in a list.")
def limits(models: tuple[str, ...], as_json: bool) -> None:
    """Show the fleet-wide limits: TPM/RPM, bucket levels and refill, waiters, cooldowns."""
    from shared.embedded_redis import with_embedded_redis
    from shared.settings import Settings

    settings = with_embedded_redis(Settings())  # a CLI command: unset IMGQ_REDIS_URL is fine
    config = LimitsConfig.from_settings(settings)
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    account = key_fingerprint(key, settings.openai_base_url)
    url = settings.require_redis_url()
    snaps = asyncio.run(collect(url, config, account, models))
    if as_json:
        out: list[dict[str, Any]] = [s.as_dict() for s in snaps]
        click.echo(json.dumps(out, indent=2))
    elif not snaps:
        click.echo("no limits in use yet (configure IMGQ_MODEL_LIMITS or run a worker)")
    else:
        click.echo(render_table(snaps))
