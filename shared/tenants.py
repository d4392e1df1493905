"""API keys per tenant: created once (shown once), stored hashed, checked in constant time.

A key is ``imgq_`` + 43 URL-safe characters (256 random bits). Only its SHA-256 is kept: a
high-entropy secret needs no slow hash, and a leaked Redis dump gives no usable key. Layout:

    imgq:apikey:<sha256 hex>   the key's record (JSON: id, tenant, policy, revoked, hash)
    imgq:apikeys               hash: key id -> sha256 hex (for listing and revoking by id)
    imgq:apikeys:version       counter, +1 on every create, revoke or re-weight: workers
                               reload the fair-share weights when it moves

``authenticate`` is one GET by the hash, then ``hmac.compare_digest`` of the stored hash with
the computed one (no early-exit comparison on anything secret).

>>> check_tenant("team-a")
'team-a'
>>> check_tenant("Team A")
Traceback (most recent call last):
...
ValueError: a tenant name is 1-40 characters of a-z, 0-9, '_' and '-' (got 'Team A')
>>> KeyPolicy(models=["gpt-4o"]).allows_model("gpt-4o-2024-08-06")
False
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

KEY_PREFIX = "imgq_"
RECORD_PREFIX = "imgq:apikey:"
INDEX = "imgq:apikeys"
VERSION = "imgq:apikeys:version"
_TENANT = re.compile(r"^[a-z0-9_-]{1,40}$")
Period = Literal["daily", "monthly"]


def check_tenant(name: str) -> str:
    """``name`` if it is a valid tenant name (it becomes part of job ids and metric labels)."""
    if not _TENANT.match(name):
        raise ValueError(
            f"a tenant name is 1-40 characters of a-z, 0-9, '_' and '-' (got {name!r})"
        )
    return name


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


class KeyPolicy(BaseModel):
    """What a key may do. Empty lists and None: no restriction on that axis."""

    models: list[str] = Field(default_factory=list)
    max_output_tokens: int | None = Field(default=None, ge=1)
    priorities: list[str] = Field(default_factory=list)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_period: Period = "daily"
    weight: float = Field(default=1.0, gt=0)

    def allows_model(self, model: str) -> bool:
        # Exact names only: a dated snapshot is a different model with its own price.
        return not self.models or model in self.models


class ApiKey(BaseModel):
    """One key's record. ``hash`` is the SHA-256 of the secret, never the secret itself."""

    id: str
    tenant: str
    hash: str
    policy: KeyPolicy = Field(default_factory=KeyPolicy)
    admin: bool = False  # may read /metrics on the API port
    created_at: float = Field(default_factory=time.time)
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def public(self) -> dict[str, object]:
        """The record as shown to operators: everything but the hash."""
        return self.model_dump(mode="json", exclude={"hash"})


class KeyStore:
    """Create, list, revoke and check API keys in Redis."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client

    async def create(
        self, tenant: str, policy: KeyPolicy | None = None, *, admin: bool = False
    ) -> tuple[ApiKey, str]:
        """A new key for ``tenant``: its record and the secret (returned once, never stored)."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id="key_" + secrets.token_hex(6),
            tenant=check_tenant(tenant),
            hash=hash_key(raw),
            policy=policy or KeyPolicy(),
            admin=admin,
        )
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(RECORD_PREFIX + key.hash, key.model_dump_json())
            pipe.hset(INDEX, key.id, key.hash)
            pipe.incr(VERSION)
            await pipe.execute()
        return key, raw

    async def authenticate(self, raw: str) -> ApiKey | None:
        """The live key whose secret is ``raw``, or None (unknown, malformed or revoked)."""
        if not raw.startswith(KEY_PREFIX) or len(raw) > 200:
            return None
        digest = hash_key(raw)
        doc = await self._r.get(RECORD_PREFIX + digest)
        if doc is None:
            return None
        key = ApiKey.model_validate_json(doc)
        if not hmac.compare_digest(key.hash, digest) or key.revoked:
            return None
        return key

    async def get(self, key_id: str) -> ApiKey | None:
        digest = await self._r.hget(INDEX, key_id)  # type: ignore[misc]
        if digest is None:
            return None
        text = digest.decode() if isinstance(digest, bytes) else str(digest)
        doc = await self._r.get(RECORD_PREFIX + text)
        return ApiKey.model_validate_json(doc) if doc else None

    async def list(self) -> list[ApiKey]:
        digests = await self._r.hvals(INDEX)  # type: ignore[misc]
        if not digests:
            return []
        names = [RECORD_PREFIX + (d.decode() if isinstance(d, bytes) else str(d)) for d in digests]
        docs = await self._r.mget(names)
        keys = [ApiKey.model_validate_json(d) for d in docs if d]
        return sorted(keys, key=lambda k: (k.tenant, k.created_at))

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke at once (the next request with it gets 401); None when there is no such key."""
        key = await self.get(key_id)
        if key is None:
            return None
        if not key.revoked:
            key.revoked_at = time.time()
            await self._save(key)
        return key

    async def set_weight(self, key_id: str, weight: float) -> ApiKey | None:
        """Give the key a new fair-share weight (running workers pick it up without restart)."""
        key = await self.get(key_id)
        if key is None:
            return None
        key.policy = key.policy.model_copy(update={"weight": KeyPolicy(weight=weight).weight})
        await self._save(key)
        return key

    async def _save(self, key: ApiKey) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(RECORD_PREFIX + key.hash, key.model_dump_json())
            pipe.incr(VERSION)
            await pipe.execute()

    async def version(self) -> int:
        """Moves on every create, revoke or re-weight (0: none recorded)."""
        raw = await self._r.get(VERSION)
        return int(raw) if raw else 0

    async def tenant_weights(self) -> dict[str, float]:
        """Each tenant's weight for fair share (the largest of its live keys' weights)."""
        weights: dict[str, float] = {}
        for key in await self.list():
            if not key.revoked:
                weights[key.tenant] = max(weights.get(key.tenant, 0.0), key.policy.weight)
        return weights


async def load_tenant_weights(client: aioredis.Redis) -> dict[str, float]:
    """Tenants' fair-share weights for a worker's limiter; {} when the keys cannot be read."""
    try:
        return await KeyStore(client).tenant_weights()
    except (RedisError, OSError, ValueError):
        return {}


__all__ = ["ApiKey", "KeyPolicy", "KeyStore", "check_tenant", "hash_key", "load_tenant_weights"]
