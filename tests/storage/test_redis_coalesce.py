"""CoalescingRedis against a real Redis process: one round trip per loop turn, same answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.embedded_redis import free_port
from shared.redis_coalesce import MAX_PIPELINE, CoalescingRedis


@pytest.fixture
async def cr(redis_url: str) -> AsyncIterator[CoalescingRedis]:
    client = CoalescingRedis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_commands_of_one_turn_share_a_pipeline_and_get_their_own_replies(
    cr: CoalescingRedis,
) -> None:
    await asyncio.gather(*(cr.set(f"k{i}", i) for i in range(50)))
    before = cr.pipelines_sent
    replies = await asyncio.gather(
        *(cr.get(f"k{i}") for i in range(50)), cr.incr("n"), cr.mget("k1", "k2", "absent")
    )
    assert replies[:50] == [str(i).encode() for i in range(50)]
    assert replies[50] == 1
    assert replies[51] == [b"1", b"2", None]
    assert cr.pipelines_sent - before == 1  # 52 commands, one round trip
    assert cr.commands_coalesced >= 102


async def test_one_failing_command_fails_alone(cr: CoalescingRedis) -> None:
    await cr.set("text", "not a number")
    results = await asyncio.gather(
        cr.incr("text"), cr.incr("counter"), cr.get("text"), return_exceptions=True
    )
    assert isinstance(results[0], ResponseError)
    assert results[1:] == [1, b"not a number"]


async def test_scripts_reload_after_a_flush(cr: CoalescingRedis) -> None:
    script = cr.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(keys=["s"], args=[2]) == 2
    await cr.script_flush()  # the next EVALSHA answers NOSCRIPT: AsyncScript loads it again
    got = await asyncio.gather(script(keys=["s"], args=[3]), cr.get("s"))
    assert got[0] == 5


async def test_a_cancelled_caller_leaves_the_others_and_the_connection_in_order(
    cr: CoalescingRedis,
) -> None:
    await cr.set("a", "1")
    doomed = asyncio.ensure_future(cr.get("a"))
    kept = asyncio.ensure_future(cr.get("a"))
    await asyncio.sleep(0)  # both queued, the flush scheduled
    doomed.cancel()
    assert await kept == b"1"
    with pytest.raises(asyncio.CancelledError):
        await doomed
    # Replies stay paired with their commands afterwards.
    assert await asyncio.gather(cr.set("b", "2"), cr.get("a"), cr.get("b")) == [True, b"1", b"2"]


async def test_blocking_commands_go_straight_through(redis_url: str) -> None:
    client = CoalescingRedis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=4)
    )
    try:
        waiting = asyncio.ensure_future(client.blpop(["queue"], timeout=5))
        await asyncio.sleep(0.05)
        # A GET is not held up behind the BLPOP's connection or its 5 s.
        assert await asyncio.wait_for(client.get("x"), timeout=2) is None
        await client.rpush("queue", "item")
        assert await asyncio.wait_for(waiting, timeout=2) == (b"queue", b"item")
    finally:
        await client.aclose()


async def test_long_bursts_are_split_into_bounded_pipelines(cr: CoalescingRedis) -> None:
    before = cr.pipelines_sent
    n = MAX_PIPELINE * 2 + 10
    replies = await asyncio.gather(*(cr.incr("burst") for _ in range(n)))
    assert sorted(replies) == list(range(1, n + 1))
    assert cr.pipelines_sent - before >= 3


async def test_transactions_and_decoding_are_redis_pys_own(redis_url: str) -> None:
    client = CoalescingRedis.from_url(redis_url, decode_responses=True)
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.set("t", "v").get("t")
            assert await pipe.execute() == [True, "v"]
        assert await asyncio.gather(client.get("t"), client.hset("h", "f", "1")) == ["v", 1]
        assert await client.hgetall("h") == {"f": "1"}
    finally:
        await client.aclose()


async def test_a_dead_server_fails_every_caller_with_a_connection_error() -> None:
    client = CoalescingRedis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5
    )
    try:
        results = await asyncio.gather(client.get("a"), client.get("b"), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await client.aclose()
