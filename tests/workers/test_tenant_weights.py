"""Fair-share weights change on a running worker (issue 11): a key re-weighted, or a tenant's
key created, after the worker started is used for the next waiters, without a restart.

What the limiter used is read back from its fleet queue in Redis: a waiter's tag is the previous
tag of its flow (process, tenant) plus ``tokens / weight`` (bucket.lua), so two consecutive
waiters of one tenant give the weight the worker passed for the second one. The model is held
to 2 requests a minute: after the first two calls every job waits (~30 s per grant).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from producer.client import Client
from shared.limiter.config import TenantWeights
from shared.settings import Settings
from shared.tenants import KeyPolicy, KeyStore
from tests.conftest import Sim
from tests.pipeline.conftest import make_image
from tests.procs import WorkerFactory
from workers.tenant_weights import WeightsRefresher

MODEL = "gpt-4.1-mini"
T = TypeVar("T")


def with_keys(redis_url: str, fn: Callable[[KeyStore], Awaitable[T]]) -> T:
    """``fn(KeyStore)`` on its own connection (as `imgq keys` does from another process)."""

    async def go() -> T:
        r = aioredis.from_url(redis_url)
        try:
            return await fn(KeyStore(r))
        finally:
            await r.aclose()

    return asyncio.run(go())


class Queue:
    """Submits jobs and reads the weight the worker used for each one's limiter waiter."""

    def __init__(self, redis_url: str, client: Client) -> None:
        self.r = redis.Redis.from_url(redis_url)
        self.c = client
        self.seen: set[bytes] = set()
        self.last_tag: dict[str, float] = {}
        self.n = 0

    def _waiters(self) -> dict[bytes, list[str]]:
        # One model, one account: at most one waiter hash (there is none while nobody waits).
        found = {}
        for key in self.r.keys("imgq:lim:*:w"):
            found.update({i: v.decode().split(",") for i, v in self.r.hgetall(key).items()})
        return found

    def submit(self, tenant: str) -> float | None:
        """Submit one job of ``tenant``; the weight its waiter got (None: its first waiter)."""
        self.n += 1
        self.c.submit([make_image(300 + self.n)], "Describe this image.", model=MODEL,
                      tenant=tenant, max_output_tokens=50, dedup=False)  # fmt: skip
        deadline = time.monotonic() + 30
        while not (new := [w for i, w in self._waiters().items() if i not in self.seen]):
            assert time.monotonic() < deadline, "the job never joined the limiter's queue"
            time.sleep(0.05)
        self.seen |= set(self._waiters())
        ((tokens, _, _, _, _, tag, who),) = new
        assert who == tenant
        prev, self.last_tag[tenant] = self.last_tag.get(tenant), float(tag)
        return None if prev is None else int(tokens) / (float(tag) - prev)


def test_a_running_worker_uses_changed_and_new_weights(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    key, _ = with_keys(redis_url, lambda ks: ks.create("acme", KeyPolicy(weight=1)))
    limits = json.dumps({MODEL: {"tpm": 10_000_000, "rpm": 2}})
    worker_factory(simulator, IMGQ_MODEL_LIMITS=limits, IMGQ_CAPACITY_WAIT_SECONDS="600")
    with Client(Settings(redis_url=redis_url)) as c:
        first = [c.submit([make_image(i)], "Describe this image.", model=MODEL, tenant="acme")
                 for i in (1, 2)]  # fmt: skip
        assert all(res.status == "succeeded" for res in c.as_completed(first, timeout=60))
        q = Queue(redis_url, c)  # from here on every job waits in the limiter's queue
        assert q.submit("acme") is None
        assert q.submit("acme") == pytest.approx(1.0)
        with_keys(redis_url, lambda ks: ks.set_weight(key.id, 4))
        with_keys(redis_url, lambda ks: ks.create("newco", KeyPolicy(weight=2.5)))
        deadline = time.monotonic() + 60
        while (w := q.submit("acme")) != pytest.approx(4.0):  # once the worker reloaded them
            assert w == pytest.approx(1.0), w  # the old weight until then, nothing else
            assert time.monotonic() < deadline, "the new weight was never used"
            time.sleep(0.3)
        assert q.submit("acme") == pytest.approx(4.0)
        assert q.submit("newco") is None
        assert q.submit("newco") == pytest.approx(2.5)  # a tenant whose key came later


async def test_a_redis_error_keeps_the_last_weights(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    await KeyStore(r).create("acme", KeyPolicy(weight=3))
    weights = TenantWeights()
    refresher = WeightsRefresher(r, weights, base={"envonly": 2})
    assert await refresher.refresh() and dict(weights) == {"acme": 3.0, "envonly": 2.0}
    assert not await refresher.refresh()  # nothing changed: the version counter says so
    dead = aioredis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    broken = WeightsRefresher(dead, weights, base={})
    assert not await broken.refresh(force=True)
    assert dict(weights) == {"acme": 3.0, "envonly": 2.0}
    await dead.aclose()
    await r.aclose()


def test_imgq_keys_set_weight(redis_url: str) -> None:
    from tests.api.conftest import imgq

    env = {**os.environ, "IMGQ_REDIS_URL": redis_url}
    made = imgq(env, "keys", "create", "--tenant", "acme", "--weight", "1", "--json")
    key_id = json.loads(made.stdout)["id"]
    before = with_keys(redis_url, lambda ks: ks.version())
    out = imgq(env, "keys", "set-weight", key_id, "3")
    assert out.returncode == 0 and "weight 3" in out.stdout, out.stderr
    assert with_keys(redis_url, lambda ks: ks.tenant_weights()) == {"acme": 3.0}
    assert with_keys(redis_url, lambda ks: ks.version()) > before  # running workers reload
    assert imgq(env, "keys", "set-weight", "key_nope", "3").returncode != 0
    assert imgq(env, "keys", "set-weight", key_id, "0").returncode != 0
