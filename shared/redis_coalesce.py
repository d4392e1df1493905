"""A Redis client that sends the commands issued in one event-loop turn as one pipeline.

A worker runs dozens of jobs on one loop, each awaiting its own short commands (lease, result
read, image read, limiter, settle, commit). redis-py spends most of a command's CPU on the
client side (a pool checkout, a timeout, a send syscall, a read), so N jobs' commands cost N
times that. ``CoalescingRedis`` queues each plain data command with a future, and once per loop
turn sends everything queued as one non-transactional pipeline: one checkout, one write, one
read, each reply (or its own error) handed to its caller. Measured (``python -m
benchmarks.overhead --quick``, 64 jobs in flight): with thumbnails prepared on the loop
(workers/images_step.py), the worker's CPU per job fell from 8.7-9.6 ms to 6.2-7.7 ms; either
change alone moved nothing past the noise.

What does not change: every caller still awaits its own reply, in the order it sent; a command
that fails (``WRONGTYPE``, ``NOSCRIPT``: scripts reload as usual) fails alone; a connection error
fails the commands of that pipeline, as it would fail each of them sent alone. Commands that
block or change the connection's state (``BLPOP``, ``SUBSCRIBE``, ``WATCH``, ``MULTI``...) and
anything not listed in ``COALESCED`` go straight through, unchanged. Pipelines and pub/sub made
from this client are redis-py's own.

>>> r = CoalescingRedis.from_url("redis://localhost:6379/0")  # doctest: +SKIP
>>> await asyncio.gather(r.get("a"), r.get("b"), r.incr("n"))  # one round trip  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

# Plain, non-blocking data commands (replies parsed as redis-py parses them alone).
COALESCED = frozenset(
    [
        "GET",
        "MGET",
        "SET",
        "SETEX",
        "PSETEX",
        "GETDEL",
        "GETEX",
        "DEL",
        "UNLINK",
        "EXISTS",
        "EXPIRE",
        "PEXPIRE",
        "EXPIREAT",
        "PEXPIREAT",
        "TTL",
        "PTTL",
        "TYPE",
        "INCR",
        "INCRBY",
        "DECR",
        "DECRBY",
        "HGET",
        "HMGET",
        "HGETALL",
        "HSET",
        "HSETNX",
        "HDEL",
        "HINCRBY",
        "HLEN",
        "HVALS",
        "HKEYS",
        "HEXISTS",
        "SADD",
        "SREM",
        "SMEMBERS",
        "SISMEMBER",
        "SCARD",
        "ZADD",
        "ZREM",
        "ZSCORE",
        "ZCARD",
        "ZCOUNT",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZREVRANGE",
        "ZREMRANGEBYSCORE",
        "LPUSH",
        "RPUSH",
        "LLEN",
        "LRANGE",
        "LREM",
        "LTRIM",
        "PUBLISH",
        "EVALSHA",
        "TIME",
    ]
)
MAX_PIPELINE = 256  # commands per pipeline: bounds one reply buffer and one caller's wait
# Pipelines in flight at once per client: what queues meanwhile waits for one to come back, so
# batches grow with load; two, so that one slow reply (a big MGET) does not hold up the rest.
MAX_IN_FLIGHT = 2

_Queued = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]  # command, options, reply


class CoalescingRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` whose plain commands of one loop turn share a round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued: list[_Queued] = []
        self._flushing: set[asyncio.Task[None]] = set()  # strong references until done
        self.pipelines_sent = 0  # for tests and curiosity: commands / pipelines = batching
        self.commands_coalesced = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0]
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        plain = isinstance(name, str) and name.upper() in COALESCED
        if not plain or self.single_connection_client:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued and len(self._flushing) < MAX_IN_FLIGHT:
            loop.call_soon(self._flush)
        self._queued.append((args, options, future))
        return await future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        if not queued:
            return
        for start in range(0, len(queued), MAX_PIPELINE):
            task = asyncio.ensure_future(self._send(queued[start : start + MAX_PIPELINE]))
            self._flushing.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        if self._queued and len(self._flushing) < MAX_IN_FLIGHT:
            self._flush()  # what queued up meanwhile goes as the next pipeline

    async def _send(self, batch: list[_Queued]) -> None:
        live = [item for item in batch if not item[2].done()]  # callers cancelled meanwhile
        if not live:
            return
        pipe = self.pipeline(transaction=False)
        for args, options, _ in live:
            pipe.execute_command(*args, **options)
        self.pipelines_sent += 1
        self.commands_coalesced += len(live)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            _fail_all(live, ConnectionError("the Redis client was closed mid-pipeline"))
            raise
        except Exception as exc:  # connection lost, timeout: each caller sees it, as if alone
            _fail_all(live, exc)
            return
        for (_, _, future), reply in zip(live, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


def _fail_all(batch: list[_Queued], exc: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)
