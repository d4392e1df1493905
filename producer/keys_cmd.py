"""``imgq keys``: API keys per tenant for the HTTP API (stored hashed; a key is shown once).

$ imgq keys create --tenant acme --models gpt-4.1-mini --max-output-tokens 2000 \\
      --priorities bulk --daily-budget-usd 25 --weight 3
key_3f2a9c0d11e4  tenant acme
imgq_Zb3...        <- shown once: store it now
$ imgq keys create --tenant acme --json        # {"tenant": "acme", "key": "imgq_...", "id": ...}
$ imgq keys list                               # id, tenant, policy, created, revoked
$ imgq keys revoke key_3f2a9c0d11e4            # refused from the next request on
$ imgq keys set-weight key_3f2a9c0d11e4 2      # fair-share weight; running workers reload it
$ imgq keys usage                              # spend today / this month per key
$ imgq keys webhook-secret --tenant acme       # the secret that signs acme's webhooks
$ imgq keys webhook-secret --tenant acme --rotate --grace 24h   # new one; old also signs 24 h
$ imgq keys webhook-secret --tenant acme --revoke-old           # end the grace period now
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

T = TypeVar("T")


def _run(fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn(redis)`` against the configured (or embedded) Redis."""
    import redis.asyncio as aioredis

    from shared.embedded_redis import with_embedded_redis
    from shared.settings import Settings

    settings = with_embedded_redis(Settings())

    async def go() -> T:
        r = aioredis.from_url(settings.require_redis_url())
        try:
            return await fn(r)
        finally:
            await r.aclose()

    return asyncio.run(go())


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


@click.group(name="keys")
def keys() -> None:
    """API keys per tenant: create (shown once), list, revoke, usage."""


@keys.command()
@click.option("--tenant", required=True, help="a-z, 0-9, '_' and '-', up to 40 characters.")
@click.option("--models", default=None, help="Comma-separated models the key may use (default: any).")  # fmt: skip
@click.option("--max-output-tokens", type=click.IntRange(min=1), default=None)
@click.option("--priorities", default=None, help="Comma-separated: interactive,bulk (default: both).")  # fmt: skip
@click.option("--daily-budget-usd", type=click.FloatRange(min=0), default=None)
@click.option("--monthly-budget-usd", type=click.FloatRange(min=0), default=None)
@click.option("--weight", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Share of a model's capacity when tenants are backlogged together.")  # fmt: skip
@click.option("--admin", is_flag=True, help="May also read /metrics on the API port.")
@click.option("--json", "as_json", is_flag=True, help='Print {"tenant", "key", ...} as JSON.')
def create(
    tenant: str,
    models: str | None,
    max_output_tokens: int | None,
    priorities: str | None,
    daily_budget_usd: float | None,
    monthly_budget_usd: float | None,
    weight: float,
    admin: bool,
    as_json: bool,
) -> None:
    """Create a key for TENANT; the key is printed once and only its hash is kept."""
    from shared.tenants import KeyPolicy, KeyStore, check_tenant

    if daily_budget_usd is not None and monthly_budget_usd is not None:
        raise click.UsageError("give --daily-budget-usd or --monthly-budget-usd, not both")
    try:
        check_tenant(tenant)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant") from None
    prios = _csv(priorities)
    if bad := [p for p in prios if p not in ("interactive", "bulk")]:
        raise click.BadParameter(f"unknown priority {bad[0]!r}", param_hint="--priorities")
    policy = KeyPolicy(
        models=_csv(models),
        max_output_tokens=max_output_tokens,
        priorities=prios,
        budget_usd=monthly_budget_usd if monthly_budget_usd is not None else daily_budget_usd,
        budget_period="monthly" if monthly_budget_usd is not None else "daily",
        weight=weight,
    )
    from shared.webhooks import tenant_secret

    async def go(r: Any) -> tuple[Any, str, bytes]:
        record, raw = await KeyStore(r).create(tenant, policy, admin=admin)
        return record, raw, await tenant_secret(r, tenant)

    record, raw, whsec = _run(go)
    if as_json:
        doc = {"tenant": record.tenant, "key": raw, **record.public()}
        click.echo(json.dumps({**doc, "webhook_secret": whsec.decode()}))
        return
    click.echo(f"{record.id}  tenant {record.tenant}")
    click.echo(raw)
    click.echo("(shown once: store it now; only its hash is kept)", err=True)
    click.echo(f"webhook signing secret of tenant {tenant}: {whsec.decode()}", err=True)


MAX_GRACE_SECONDS = 30 * 24 * 3600.0


def _grace(value: str) -> float:
    from shared.limiter.headers import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give e.g. 24h, 30m, 90s", param_hint="--grace"
        ) from None
    if seconds > MAX_GRACE_SECONDS:
        raise click.BadParameter("at most 720h (30 days)", param_hint="--grace")
    return seconds


@keys.command(name="webhook-secret")
@click.option(
    "--tenant", default=None, help="The tenant (default: open mode's, IMGQ_API_AUTH=off)."
)
@click.option("--rotate", is_flag=True, help="Make a new secret (printed once); see --grace.")
@click.option("--grace", default="24h", show_default=True,
              help="With --rotate: how long the replaced secret keeps signing too (0: not at all).")  # fmt: skip
@click.option("--revoke-old", is_flag=True, help="End the grace period now: only the current secret signs.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help='Print {"tenant", "webhook_secret", ...} as JSON.')  # fmt: skip
def webhook_secret(
    tenant: str | None, rotate: bool, grace: str, revoke_old: bool, as_json: bool
) -> None:
    """Print (or rotate) the secret that signs TENANT's webhooks (Imgq-Signature)."""
    from shared.webhooks import revoke_previous_secrets, rotate_secret, tenant_secret

    if rotate and revoke_old:
        raise click.UsageError(
            "give --rotate or --revoke-old, not both (--rotate --grace 0 is both)"
        )
    name = tenant or "-"
    if revoke_old:
        count = _run(lambda r: revoke_previous_secrets(r, tenant))
        if as_json:
            click.echo(json.dumps({"tenant": name, "revoked_previous": count}))
        else:
            click.echo(
                f"tenant {name}: {count} previous secret(s) revoked; only the current one signs"
            )
        return
    if not rotate:
        whsec = _run(lambda r: tenant_secret(r, tenant)).decode()
        click.echo(json.dumps({"tenant": name, "webhook_secret": whsec}) if as_json else whsec)
        return
    seconds = _grace(grace)
    new, until = _run(lambda r: rotate_secret(r, tenant, grace_seconds=seconds))
    if as_json:
        doc = {"tenant": name, "webhook_secret": new.decode(), "previous_valid_until": until}
        click.echo(json.dumps(doc))
        return
    click.echo(new.decode())
    ends = (
        "no previous secret signs any more"
        if until is None
        else (
            f"the previous secret also signs until {_when(until)} UTC (--revoke-old ends that now)"
        )
    )
    click.echo(f"(new webhook secret of tenant {name}: store it now; {ends})", err=True)


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
def list_cmd(as_json: bool) -> None:
    """List keys (never the secrets)."""
    from shared.tenants import KeyStore

    found = _run(lambda r: KeyStore(r).list())
    if as_json:
        for k in found:
            click.echo(json.dumps(k.public()))
        return
    click.echo(f"{'ID':<18}{'TENANT':<20}{'CREATED (UTC)':<18}{'REVOKED':<18}POLICY")
    for k in found:
        policy = json.dumps(k.policy.model_dump(exclude_defaults=True), separators=(",", ":"))
        click.echo(
            f"{k.id:<18}{k.tenant:<20}{_when(k.created_at):<18}{_when(k.revoked_at):<18}{policy}"
        )


@keys.command()
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke KEY_ID: refused (401) from the next request on."""
    from shared.tenants import KeyStore

    record = _run(lambda r: KeyStore(r).revoke(key_id))
    if record is None:
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"revoked {record.id} (tenant {record.tenant})")


@keys.command(name="set-weight")
@click.argument("key_id")
@click.argument("weight", type=click.FloatRange(min=0, min_open=True))
def set_weight(key_id: str, weight: float) -> None:
    """Give KEY_ID a new fair-share WEIGHT (running workers use it within seconds)."""
    from shared.tenants import KeyStore

    record = _run(lambda r: KeyStore(r).set_weight(key_id, weight))
    if record is None:
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"{record.id} (tenant {record.tenant}): weight {record.policy.weight:g}")


@keys.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
def usage(as_json: bool) -> None:
    """Spend per key: today and this month (UTC, open reservations included), and budgets."""
    from shared.budget import Budgets
    from shared.tenants import KeyStore

    async def go(r: Any) -> list[dict[str, Any]]:
        budgets = Budgets(r)
        rows = []
        for k in await KeyStore(r).list():
            day, month = await budgets.spent(k)
            rows.append({"id": k.id, "tenant": k.tenant, "day_usd": round(day, 6),
                         "month_usd": round(month, 6), "budget_usd": k.policy.budget_usd,
                         "budget_period": k.policy.budget_period,
                         "revoked": k.revoked})  # fmt: skip
        return rows

    rows = _run(go)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo(f"{'ID':<18}{'TENANT':<20}{'TODAY $':>12}{'MONTH $':>12}  BUDGET")
    for row in rows:
        budget = (
            "-" if row["budget_usd"] is None else f"${row['budget_usd']:g}/{row['budget_period']}"
        )
        click.echo(
            f"{row['id']:<18}{row['tenant']:<20}{row['day_usd']:>12.4f}{row['month_usd']:>12.4f}"
            f"  {budget}"
        )


__all__ = ["keys"]
