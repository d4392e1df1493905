"""Tenants' fair-share weights, kept current on a running worker (issue 11).

The weights come from the tenants' API keys (shared/tenants.py; ``IMGQ_TENANT_WEIGHTS`` under
them) and live in one ``TenantWeights`` table that the limiter's config reads for every new
waiter. A small task on the worker's loop reloads the table when the key store's version counter
moves (every create, revoke or re-weight; checked every ``CHECK_SECONDS``) and at least every
``REFRESH_SECONDS`` anyway (a change made behind the store's back). A Redis error keeps the last
table: a worker never falls back to equal weights because Redis blinked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.limiter.config import TenantWeights
from shared.loop_thread import cancel_task
from shared.tenants import KeyStore, load_tenant_weights

log = logging.getLogger(__name__)
CHECK_SECONDS = 2.0  # one GET of the version counter
REFRESH_SECONDS = 15.0  # a full reload of the keys, whatever the counter says


async def initial_weights(r: aioredis.Redis, base: Mapping[str, float]) -> TenantWeights:
    """The table at start: ``base`` (the env's), the keys' weights over it ({} if unreadable)."""
    return TenantWeights({**base, **await load_tenant_weights(r)})


class WeightsRefresher:
    """Keeps ``weights`` current; ``start()`` on the worker's loop, ``await stop()`` at close."""

    def __init__(
        self, r: aioredis.Redis, weights: TenantWeights, *, base: Mapping[str, float]
    ) -> None:
        self._r = r
        self._store = KeyStore(r)
        self.weights = weights
        self._base = dict(base)
        self._version: int | None = None
        self._loaded_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="imgq-tenant-weights"
            )

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            await self.refresh()

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload if the keys changed (or the last reload is old); whether the table changed."""
        try:
            version = await self._store.version()
            stale = time.monotonic() - self._loaded_at >= REFRESH_SECONDS
            if not force and not stale and version == self._version:
                return False
            # The counter is read first: a change landing in between is reloaded next time.
            found = await self._store.tenant_weights()
        except (RedisError, OSError, ValueError) as exc:
            log.warning("tenant weights not refreshed, keeping the last ones: %r", exc)
            return False
        self._version, self._loaded_at = version, time.monotonic()
        changed = self.weights.replace({**self._base, **found})
        if changed:
            log.info("tenant fair-share weights reloaded: %d tenant(s)", len(self.weights))
        return changed


__all__ = ["CHECK_SECONDS", "REFRESH_SECONDS", "WeightsRefresher", "initial_weights"]
