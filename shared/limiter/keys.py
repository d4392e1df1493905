"""Who a limit belongs to: (API-key fingerprint, model), and the Redis keys that hold its state.

OpenAI limits an organisation per model; the API key stands in for the organisation and the base
URL keeps two providers apart. Only a short sha256 prefix of the key is ever stored or shown.

>>> fp = key_fingerprint("sk-secret", "https://api.openai.com/v1")
>>> len(fp), "secret" in fp
(16, False)
>>> key_fingerprint("sk-secret", "https://api.openai.com/v1/") == fp
True
>>> redis_keys(LimitKey("gpt-4o", fp), prefix="imgq:lim").state.endswith(":s")
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_PREFIX = "imgq:lim"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class LimitKey:
    """One shared limit: a model under one account (``key_fingerprint``)."""

    model: str
    account: str

    def __post_init__(self) -> None:
        # ':' and braces would break the key layout (and the Redis Cluster hash tag).
        for part in (self.model, self.account):
            if not part or any(c in part for c in "{}\n "):
                raise ValueError(f"invalid limit key part: {part!r}")


def key_fingerprint(api_key: str | None, base_url: str | None) -> str:
    """A stable, non-reversible id for (API key, base URL): 16 hex chars of a sha256.

    An unset key (e.g. a local OpenAI-compatible server) still gets a fingerprint, per base URL.
    """
    url = (base_url or DEFAULT_BASE_URL).strip().rstrip("/").lower()
    digest = hashlib.sha256(f"{url}\n{api_key or ''}".encode()).hexdigest()
    return digest[:16]


# Longer model names (junk from a caller) are shortened to a bounded, still distinct, key part.
MAX_MODEL_PART = 80


def model_part(model: str) -> str:
    """``model`` itself when short, else a prefix plus a hash: Redis keys stay bounded.

    >>> model_part("gpt-4o")
    'gpt-4o'
    >>> len(model_part("x" * 100_000))
    80
    """
    if len(model) <= MAX_MODEL_PART:
        return model
    digest = hashlib.sha256(model.encode()).hexdigest()[:16]
    return f"{model[: MAX_MODEL_PART - 17]}~{digest}"


@dataclass(frozen=True)
class RedisKeys:
    """The Redis keys of one limit. All share one hash tag so one Lua script may touch them all."""

    state: str  # HASH: deficits, discovered limits, cooldown, clock offset, fair-share clocks
    inflight: str  # ZSET: grant id -> grant time (ms), calls not yet settled or released
    entries: str  # HASH: grant id -> "tokens,images" of the calls in flight
    queue_interactive: str  # ZSET: waiter id -> fair-share tag
    queue_bulk: str  # ZSET: waiter id -> fair-share tag
    waiters: (
        str  # HASH: waiter id -> record (tokens, images, class, process, deadline, tag, tenant)
    )
    tenants: str  # HASH: class|process|tenant -> last tag (flows with waiters only)
    procs: str  # ZSET: process id -> last seen (ms)
    grants_prefix: str  # + process id: LIST of grants made for that process by others (TTL 60 s)

    def all(self) -> list[str]:
        return [self.state, self.inflight, self.entries, self.queue_interactive, self.queue_bulk,
                self.waiters, self.tenants, self.procs]  # fmt: skip


def redis_keys(key: LimitKey, *, prefix: str = DEFAULT_PREFIX) -> RedisKeys:
    base = f"{prefix}:{{{key.account}:{model_part(key.model)}}}"
    return RedisKeys(*(f"{base}:{s}" for s in ("s", "f", "e", "qi", "qb", "w", "t", "p", "g:")))


def registry_key(prefix: str = DEFAULT_PREFIX) -> str:
    """A ZSET "account model" -> last use (ms) of the limits in use (``imgq limits`` lists it).

    Bounded: entries unused for a day go, and at most ``REGISTRY_MAX`` are kept.
    """
    return f"{prefix}:registry"


REGISTRY_MAX = 1000
