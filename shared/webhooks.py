"""Webhooks: a job's final document POSTed to its ``callback_url``, signed, retried, bounded.

Signature (header ``Imgq-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]``): HMAC-SHA256
with the tenant's webhook secret over ``f"{t}.{body}"`` (the raw body bytes). Receivers recompute
it, accept any listed ``v1`` (compared in constant time) and refuse old timestamps (replays):

>>> body = b'{"type":"job.finished"}'
>>> header = sign(b"whsec_test", body, timestamp=1700000000)
>>> header
't=1700000000,v1=2f44d0907b80864288acba3b56f86f71c8076fa67a1552abbc9909f58d34a021'
>>> verify(b"whsec_test", body, header, now=1700000010)
True
>>> verify(b"whsec_test", body + b" ", header, now=1700000010)
False

Rotation (Stripe / Standard Webhooks style): ``rotate_secret`` makes a new secret; the replaced
one stays valid for a grace period, during which every delivery carries one ``v1`` per valid
secret, the new one first (``previous=``):

>>> both = sign(b"whsec_new", body, timestamp=1700000000, previous=[b"whsec_old"])
>>> both.count("v1="), verify(b"whsec_new", body, both, now=1700000010)
(2, True)
>>> verify(b"whsec_old", body, both, now=1700000010)
True

Secrets are stored as they are (they must sign, so they cannot be hashed), never logged.

Deliveries are durable: ``imgq:webhooks:due`` (sorted set, score = when) + one record per
delivery. A worker claims due deliveries by pushing their score one lease ahead (so a worker
that dies mid-delivery only delays it), retries with exponential backoff up to
``webhook_max_attempts`` within ``webhook_lifetime_seconds``, then drops it (logged).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel

from shared.lua import load_lua

DUE = "imgq:webhooks:due"
RECORD_PREFIX = "imgq:webhook:"
SECRET_PREFIX = "imgq:webhook_secret:"  # + tenant ("-" in open mode)
# + tenant: zset of replaced secrets still in their grace period -> valid until (ms, Redis TIME)
PREVIOUS_PREFIX = "imgq:webhook_secret_prev:"
MAX_PREVIOUS = 4  # each one is one more HMAC per delivery and one more v1 in the header
SIGNATURE_HEADER = "Imgq-Signature"
TOLERANCE_SECONDS = 300
LEASE_SECONDS = 60
MAX_BACKOFF_SECONDS = 300.0


def sign(
    secret: bytes, body: bytes, *, timestamp: int | None = None, previous: Sequence[bytes] = ()
) -> str:
    """The signature header: one ``v1`` for ``secret``, then one per ``previous`` secret."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + body
    macs = [hmac.new(k, signed, hashlib.sha256).hexdigest() for k in (secret, *previous)]
    return f"t={t}," + ",".join(f"v1={m}" for m in macs)


def verify(
    secret: bytes, body: bytes, header: str, *, now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:  # fmt: skip
    """Whether any ``v1`` of ``header`` signs ``body`` with ``secret``, within ``tolerance`` s."""
    try:
        pairs = [p.split("=", 1) for p in header.split(",") if "=" in p]
        t = int(next(v for k, v in pairs if k.strip() == "t"))
    except (StopIteration, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    # Every candidate is compared (no early exit), each in constant time.
    found = False
    for k, v in pairs:
        found |= k.strip() == "v1" and hmac.compare_digest(expected, v.strip())
    return found


def backoff_seconds(attempts: int) -> float:
    """Wait after the ``attempts``-th failure: 1, 2, 4, ... s, at most 5 minutes.

    >>> [backoff_seconds(n) for n in (1, 2, 3, 20)]
    [1.0, 2.0, 4.0, 300.0]
    """
    return min(MAX_BACKOFF_SECONDS, 2.0 ** (attempts - 1))


class Delivery(BaseModel):
    id: str
    url: str
    tenant: str | None
    body: str
    attempts: int = 0
    created_at: float
    expires_at: float


def _keys(tenant: str | None) -> list[str]:
    return [SECRET_PREFIX + (tenant or "-"), PREVIOUS_PREFIX + (tenant or "-")]


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def tenant_secrets(r: aioredis.Redis, tenant: str | None) -> list[bytes]:
    """The tenant's valid signing secrets: the current one first (made on first use; the same
    for all its keys), then the replaced ones still in their grace period."""
    script = r.register_script(load_lua("shared", "webhook_secrets.lua"))
    found = await script(keys=_keys(tenant), args=[_new_secret()])
    return [v if isinstance(v, bytes) else str(v).encode() for v in found]


async def tenant_secret(r: aioredis.Redis, tenant: str | None) -> bytes:
    """The tenant's current signing secret, made on first use."""
    return (await tenant_secrets(r, tenant))[0]


async def rotate_secret(
    r: aioredis.Redis, tenant: str | None, *, grace_seconds: float
) -> tuple[bytes, float | None]:
    """A new current secret; the replaced one keeps signing for ``grace_seconds`` (0: not at all).

    Returns the new secret and when the replaced one stops (unix seconds; None: it already has).
    """
    new = _new_secret()
    script = r.register_script(load_lua("shared", "webhook_rotate.lua"))
    until_ms = int(
        await script(keys=_keys(tenant), args=[new, round(grace_seconds * 1000), MAX_PREVIOUS])
    )
    return new.encode(), (until_ms / 1000 if until_ms else None)


async def revoke_previous_secrets(r: aioredis.Redis, tenant: str | None) -> int:
    """End the grace period now: only the current secret signs. Returns how many were valid."""
    key = _keys(tenant)[1]
    async with r.pipeline(transaction=True) as pipe:
        pipe.zcount(key, f"({time.time() * 1000}", "+inf")
        pipe.delete(key)
        count, _ = await pipe.execute()
    return int(count)


class WebhookQueue:
    """Enqueue, claim, finish and reschedule deliveries in Redis."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client
        self._claim = client.register_script(load_lua("shared", "webhook_claim.lua"))

    async def enqueue(
        self, url: str, tenant: str | None, payload: dict[str, Any], *, lifetime: float
    ) -> Delivery:
        now = time.time()
        d = Delivery(
            id=uuid.uuid4().hex,
            url=url,
            tenant=tenant,
            body=json.dumps(payload, separators=(",", ":")),
            created_at=now,
            expires_at=now + lifetime,
        )
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(RECORD_PREFIX + d.id, d.model_dump_json(), ex=int(lifetime) + LEASE_SECONDS)
            pipe.zadd(DUE, {d.id: now})
            await pipe.execute()
        return d

    async def claim(self, limit: int = 32) -> list[Delivery]:
        """Due deliveries, each leased to this caller for ``LEASE_SECONDS``."""
        ids = await self._claim(keys=[DUE], args=[time.time(), LEASE_SECONDS, limit])
        if not ids:
            return []
        docs = await self._r.mget([RECORD_PREFIX + bytes(i).decode() for i in ids])
        out = [Delivery.model_validate_json(doc) for doc in docs if doc]
        missing = [bytes(i).decode() for i, doc in zip(ids, docs, strict=True) if not doc]
        if missing:  # expired records: nothing left to deliver
            await self._r.zrem(DUE, *missing)
        return out

    async def done(self, d: Delivery) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zrem(DUE, d.id)
            pipe.delete(RECORD_PREFIX + d.id)
            await pipe.execute()

    async def retry_later(self, d: Delivery, *, max_attempts: int) -> bool:
        """Count the failed attempt; False (and forgotten) when no attempt is left."""
        d.attempts += 1
        when = time.time() + backoff_seconds(d.attempts)
        if d.attempts >= max_attempts or when > d.expires_at:
            await self.done(d)
            return False
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(RECORD_PREFIX + d.id, d.model_dump_json(), keepttl=True)
            pipe.zadd(DUE, {d.id: when})
            await pipe.execute()
        return True


__all__ = [
    "SIGNATURE_HEADER",
    "Delivery",
    "WebhookQueue",
    "backoff_seconds",
    "revoke_previous_secrets",
    "rotate_secret",
    "sign",
    "tenant_secret",
    "tenant_secrets",
    "verify",
]
