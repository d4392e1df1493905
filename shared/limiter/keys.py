"""Who a limit belongs to: (API-key fingerprint, model), and the Redis keys that hold its state.

OpenAI limits an organisation per model; the API key stands in for the organisation and the base
URL keeps two providers apart. Only a short sha256 prefix of the key is ever stored or shown.

>>> fp = key_fingerprint("sk-secret", "https://api.openai.com/v1")
>>> len(fp), "secret" in fp
(16, False)
>>> key_fingerprint("sk-secret", "https://api.openai.com/v1/") == fp
True
>>> redis_keys(LimitKey("gpt-4o", fp), prefix="imgq:lim").window.endswith(":w")
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


@dataclass(frozen=True)
class RedisKeys:
    """The Redis keys of one limit. All share one hash tag so a Lua script may touch them all."""

    state: str  # HASH: counters, discovered limits, cooldown, clock offset
    window: str  # ZSET: grant id -> grant time (ms) for every grant still in the window
    entries: str  # HASH: grant id -> "tokens,requests"
    inflight: str  # SET: grant ids reserved but not yet settled or released

    def all(self) -> list[str]:
        return [self.state, self.window, self.entries, self.inflight]


def redis_keys(key: LimitKey, *, prefix: str = DEFAULT_PREFIX) -> RedisKeys:
    base = f"{prefix}:{{{key.account}:{key.model}}}"
    return RedisKeys(f"{base}:s", f"{base}:w", f"{base}:e", f"{base}:r")


def registry_key(prefix: str = DEFAULT_PREFIX) -> str:
    """A SET of "account model" strings for every limit ever used (``imgq limits`` lists it)."""
    return f"{prefix}:registry"
