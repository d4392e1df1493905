"""Cost budgets per API key: reserve an estimate before a job is enqueued, settle with the bill.

Amounts are integer micro-dollars (no float drift in Redis). Each key has one counter per UTC day
and one per UTC month (``imgq:spend:<key id>:d:<YYYY-MM-DD>`` / ``:m:<YYYY-MM>``); a reservation
adds its estimate to both, atomically with the check against the key's limit, and remembers
itself under ``imgq:budget:resv:<job id>``. The worker settles once the job is final: the
counters move by ``billed - reserved`` and the reservation is deleted in the same script, so a
second settle (a redelivery) changes nothing. A job that dies without settling keeps its
estimate counted: the budget is then over-counted, never overspent.

The same script notes the key and the amount in the job's state hash (``budget_key``,
``budget_amount``; shared/jobstate.py), which lives as long as the job's spec: a job enqueued
again after it was settled (``imgq dlq retry``) reserves again with ``reserve_again``. A job
enqueued again while its reservation is held (the reconciler, a capacity hand-back) does not.

>>> to_micro(0.0123456)
12346
>>> period_keys("key_1", 0.0)
('imgq:spend:key_1:d:1970-01-01', 'imgq:spend:key_1:m:1970-01')
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.catalogue import Catalogue
from shared.errors import BudgetExceededError
from shared.generation import TOOL_MODEL, GenerationOptions
from shared.image_models import (
    GPT_IMAGE_INPUT_BASE,
    GPT_IMAGE_INPUT_TILE,
    generation_cost_usd,
    image_model,
    input_image_tokens,
    output_tokens,
    resolve_quality,
    resolve_size,
)
from shared.jobs import Job, Result
from shared.jobstate import state_key
from shared.lua import load_lua
from shared.tenants import ApiKey, KeyStore
from shared.text_tokens import prompt_tokens
from shared.vision_tokens import image_tokens

RESV_PREFIX = "imgq:budget:resv:"
BILLED_PREFIX = "imgq:spend:tenant:"  # + tenant: micro-USD billed in total (for the metric)
DAY_TTL = 40 * 24 * 3600
MONTH_TTL = 400 * 24 * 3600
# A state hash made by the reservation (the submit then extends it to the result TTL): long
# enough for any submit to finish, short for a job refused after its reservation.
NEW_STATE_TTL = 3600
# Shapes that bound what one image can cost at high detail (tile and patch rules alike).
_BOUNDING_SHAPES = ((2048, 768), (768, 2048), (2048, 2048), (1536, 1536), (2048, 512))
# The most one gpt-image-1 input image can cost: fitted in 2048 px with its shortest side at
# most 512, it covers at most 4 x 1 tiles.
MAX_INPUT_IMAGE_TOKENS = GPT_IMAGE_INPUT_BASE + 4 * GPT_IMAGE_INPUT_TILE


def to_micro(usd: float) -> int:
    return round(usd * 1_000_000)


def period_keys(key_id: str, now: float | None = None) -> tuple[str, str]:
    t = time.gmtime(time.time() if now is None else now)
    base = f"imgq:spend:{key_id}"
    return f"{base}:d:{time.strftime('%Y-%m-%d', t)}", f"{base}:m:{time.strftime('%Y-%m', t)}"


def estimate_cost_usd(
    catalogue: Catalogue, model: str, prompt: str, n_images: int, max_output_tokens: int
) -> float | None:
    """An upper estimate of one call's cost (every image at its costliest), None if unpriced."""
    spec = catalogue.spec(model)
    per_image = 0
    if spec.vision is not None and n_images:
        per_image = max(image_tokens(spec.vision, w, h, "high") for w, h in _BOUNDING_SHAPES)
    tokens = prompt_tokens([prompt], [per_image] * n_images)
    return catalogue.cost_usd(model, tokens, max_output_tokens)


def estimate_generation_usd(
    catalogue: Catalogue,
    options: GenerationOptions,
    prompt: str,
    input_sizes: Sequence[tuple[int, int] | None] = (),
    *,
    responses_model: str | None = None,
) -> float | None:
    """An upper bound of what one generate/edit call can bill, None if unpriced.

    ``n`` images at the asked size and quality (``auto``: the costliest), the prompt's text
    tokens (message framing included, above the API's count) and each input image's tokens
    (``None``: its size is unknown, so the most any image costs). DALL·E: ``n`` x its price.

    >>> from shared.catalogue import default_catalogue
    >>> cat = default_catalogue()
    >>> estimate_generation_usd(cat, GenerationOptions(model="dall-e-3", size="1792x1024"), "a fox")
    0.08
    >>> opts = GenerationOptions(n=2, size="1024x1024", quality="low")
    >>> estimate_generation_usd(cat, opts, "a fox") == (2 * 272 * 40 + 8 * 5) / 1e6
    True
    """
    model = options.model
    out = options.n * output_tokens(model, options.size, options.quality)
    text = prompt_tokens([prompt])
    if responses_model is not None:  # the mainline model reads the prompt; the tool draws
        mainline = catalogue.cost_usd(responses_model, text, 0)
        if mainline is None:
            return None
        quality = resolve_quality(TOOL_MODEL, options.quality)
        picture = generation_cost_usd(
            TOOL_MODEL, n_images=1, size="auto", quality=quality, output_image_tokens=out
        )
        return round(mainline + picture, 8)
    if image_model(model).billing == "per_image":
        size = resolve_size(model, options.size)
        return generation_cost_usd(model, n_images=options.n, size=size, quality=options.quality)
    images = sum(
        MAX_INPUT_IMAGE_TOKENS if s is None else input_image_tokens(*s) for s in input_sizes
    )
    return generation_cost_usd(
        model,
        n_images=options.n,
        size=options.size or "auto",
        quality=options.quality,
        text_tokens=text,
        image_tokens=images,
        output_image_tokens=out,
    )


@dataclass(frozen=True)
class Reservation:
    ok: bool
    spent_usd: float  # the period's counter after (ok) or before (refused) this reservation
    limit_usd: float | None
    amount_usd: float = 0.0  # what this reservation asked for


class Budgets:
    """Reserve, settle and read spend; one Lua script per change."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client
        self._reserve = client.register_script(load_lua("shared", "budget_reserve.lua"))
        self._settle = client.register_script(load_lua("shared", "budget_settle.lua"))

    async def reserve(self, key: ApiKey, job_id: str, amount_usd: float) -> Reservation:
        """Count ``amount_usd`` for ``job_id`` if it fits the key's budget (idempotent per job)."""
        return await self._reserve_micro(key, job_id, to_micro(amount_usd))

    async def reserve_or_refuse(self, key: ApiKey, job_id: str, amount_usd: float) -> None:
        """``reserve``, or BudgetExceededError (before any call) when it does not fit."""
        got = await self.reserve(key, job_id, amount_usd)
        if not got.ok:
            raise BudgetExceededError(
                f"this API key's {key.policy.budget_period} budget of ${got.limit_usd:.2f} is spent "
                f"(${got.spent_usd:.4f} used or reserved; this job needs up to ${amount_usd:.4f})"
            )

    async def _reserve_micro(self, key: ApiKey, job_id: str, amount: int) -> Reservation:
        day, month = period_keys(key.id)
        limit = key.policy.budget_usd
        which = "d" if key.policy.budget_period == "daily" else "m"
        ok, spent = await self._reserve(
            keys=[RESV_PREFIX + job_id, day, month, state_key(job_id)],
            args=[
                amount,
                -1 if limit is None else to_micro(limit),
                which,
                key.tenant,
                DAY_TTL,
                MONTH_TTL,
                MONTH_TTL,
                key.id,
                NEW_STATE_TTL,
            ],
        )
        return Reservation(bool(int(ok)), int(spent) / 1e6, limit, amount / 1e6)

    async def reserve_again(self, job_id: str) -> Reservation | None:
        """Reserve a job enqueued again (``imgq dlq retry``) with the amount and key of its
        first reservation, against the key's budget now. None: no key ever reserved for it
        (not a budgeted job), or that key's record is gone. Idempotent while it is held."""
        raw = await self._r.hmget(state_key(job_id), ["budget_key", "budget_amount"])  # type: ignore[misc]
        if raw[0] is None or raw[1] is None:
            return None
        key = await KeyStore(self._r).get(raw[0].decode() if isinstance(raw[0], bytes) else raw[0])
        if key is None:
            return None
        return await self._reserve_micro(key, job_id, int(raw[1]))

    async def settle(self, job_id: str, billed_usd: float | None) -> bool:
        """Replace ``job_id``'s estimate with its bill (None: unpriced, 0: no call was paid).

        Returns False when there is nothing to settle (no budgeted key, or already settled).
        """
        billed = 0 if billed_usd is None or not math.isfinite(billed_usd) else to_micro(billed_usd)
        done = await self._settle(keys=[RESV_PREFIX + job_id], args=[billed, BILLED_PREFIX])
        return bool(int(done))

    async def release(self, job_id: str) -> bool:
        """Give the whole estimate back (the job was refused, cancelled or never sent)."""
        return await self.settle(job_id, 0.0)

    async def spent(self, key: ApiKey, now: float | None = None) -> tuple[float, float]:
        """(today, this month) in USD for ``key``, open reservations included."""
        day, month = period_keys(key.id, now)
        d, m = await self._r.mget([day, month])
        return int(d or 0) / 1e6, int(m or 0) / 1e6

    async def billed_by_tenant(self, tenants: list[str]) -> dict[str, float]:
        """Settled (billed) USD per tenant since the first settle, for the metric."""
        if not tenants:
            return {}
        raw = await self._r.mget([BILLED_PREFIX + t for t in tenants])
        return {t: int(v or 0) / 1e6 for t, v in zip(tenants, raw, strict=True)}


async def settle_job(r: aioredis.Redis, job: Job, result: Result) -> None:
    """The worker's hook once ``result`` is final: settle a tenant job's reservation with its
    bill. Never raises (an unsettled reservation over-counts, it never overspends)."""
    if job.tenant is None or not result.done:
        return
    with contextlib.suppress(RedisError, OSError):
        await Budgets(r).settle(job.job_id, result.cost_usd)


__all__ = [
    "Budgets",
    "Reservation",
    "estimate_cost_usd",
    "estimate_generation_usd",
    "period_keys",
    "settle_job",
    "to_micro",
]
