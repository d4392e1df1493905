"""Webhooks: a job's final document POSTed to its ``callback_url``, signed, retried, bounded.

Signature (header ``Imgq-Signature: t=<unix seconds>,v1=<hex>``): HMAC-SHA256 with the
tenant's webhook secret over ``f"{t}.{body}"`` (the raw body bytes). Receivers recompute it,
compare in constant time and refuse old timestamps (replays):

>>> body = b'{"type":"job.finished"}'
>>> header = sign(b"whsec_test", body, timestamp=1700000000)
>>> header
't=1700000000,v1=2f44d0907b80864288acba3b56f86f71c8076fa67a1552abbc9909f58d34a021'
>>> verify(b"whsec_test", body, header, now=1700000010)
True
>>> verify(b"whsec_test", body + b" ", header, now=1700000010)
False

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
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel

from shared.lua import load_lua

DUE = "imgq:webhooks:due"
RECORD_PREFIX = "imgq:webhook:"
SECRET_PREFIX = "imgq:webhook_secret:"  # + tenant ("-" in open mode)
SIGNATURE_HEADER = "Imgq-Signature"
TOLERANCE_SECONDS = 300
LEASE_SECONDS = 60
MAX_BACKOFF_SECONDS = 300.0


def sign(secret: bytes, body: bytes, *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: bytes, body: bytes, header: str, *, now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:  # fmt: skip
    """Whether ``header`` signs ``body`` with ``secret``, within ``tolerance`` seconds."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, timestamp=t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


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


async def tenant_secret(r: aioredis.Redis, tenant: str | None) -> bytes:
    """The tenant's signing secret, made on first use (the same for all its keys)."""
    key = SECRET_PREFIX + (tenant or "-")
    await r.set(key, "whsec_" + secrets.token_urlsafe(32), nx=True)
    raw = await r.get(key)
    return raw if isinstance(raw, bytes) else str(raw).encode()


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
    "sign",
    "tenant_secret",
    "verify",
]
