"""Redis round trips per successful vision job (issue 12: at most 8).

Method: the worker's own runtime (WorkerRuntime: its pool, stores, limiter, locks) against a
private Redis and the simulator; jobs submitted by the real producer client. redis-py sends each
round trip (one command, one pipeline, one script call) with one ``send_packed_command``; the
count wraps it (counting only) and counts only sends made from the job's own asyncio context
(tasks the job starts inherit it), so the worker's background loops (heartbeat, webhooks) are
not counted. A first job warms connections and script caches (connection setup and
``SCRIPT LOAD`` are not per job); the second job is the one counted.
"""

from __future__ import annotations

import contextvars
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio.connection import AbstractConnection

from producer.client import AsyncClient
from shared.jobstate import load_spec
from shared.settings import Settings
from shared.storage.redis_store import EVENTS_CHANNEL
from tests.conftest import Sim
from tests.pipeline.conftest import make_image
from workers.locks import LOCK_PREFIX
from workers.processor import process_job
from workers.runtime import WorkerRuntime

_COUNT: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("rt", default=None)
TARGET = 8


def _settings(redis_url: str, sim: Sim) -> Settings:
    return Settings(
        redis_url=redis_url, openai_base_url=sim.base_url, openai_api_key=SecretStr("sk-test")
    )


async def _submit(settings: Settings, seed: int) -> str:
    async with AsyncClient(settings) as c:
        return await c.submit([make_image(seed)], "Describe this image.", dedup=False)


def test_round_trips_per_successful_vision_job(
    redis_url: str, simulator: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, *a: Any, **kw: Any) -> None:
        seen = _COUNT.get()
        if seen is not None:
            first = command[0] if isinstance(command, list) else command
            seen.append(bytes(first)[:60].decode("utf-8", "replace").replace("\r\n", " "))
        await original(self, command, *a, **kw)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    settings = _settings(redis_url, simulator)
    runtime = WorkerRuntime(settings, redis_url=redis_url)
    try:
        deps = runtime.deps()

        async def run(seed: int) -> tuple[str, list[str]]:
            job = await load_spec(deps.redis, await _submit(settings, seed))
            assert job is not None
            events = deps.redis.pubsub(ignore_subscribe_messages=True)
            await events.subscribe(EVENTS_CHANNEL)
            sends: list[str] = []
            _COUNT.set(sends)
            result = await process_job(job, deps)
            _COUNT.set(None)
            # The merged final step still gives the lease back and publishes the event.
            assert await deps.redis.exists(LOCK_PREFIX + job.job_id) == 0
            assert job.job_id not in deps.locks.held
            msgs = [await events.get_message(timeout=1) for _ in range(3)]  # the first: the ack
            assert {"data": f"{job.job_id} succeeded".encode()}.items() <= next(
                m for m in msgs if m is not None
            ).items()
            await events.aclose()  # type: ignore[no-untyped-call]
            return result.status, sends

        assert runtime.run(run(1), timeout=60)[0] == "succeeded"  # warm-up
        status, sends = runtime.run(run(2), timeout=60)
    finally:
        runtime.shutdown()
    assert status == "succeeded"
    print(f"\nredis round trips for one successful vision job: {len(sends)}")
    for s in sends:
        print("  ", s)
    assert len(sends) <= TARGET, sends
