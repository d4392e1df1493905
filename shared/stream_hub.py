"""Any number of event streams' deltas over ONE pub/sub connection per process (issue 11).

The pattern of ``shared/storage/wait_hub.py``: an SSE client does not get its own Redis
connection (400 watchers would be 400 connections); the hub SUBSCRIBEs the watched jobs'
channels (``shared.job_stream.channel``) on one connection, only while someone watches them, and
fans each delta out to the watchers' queues. A slow watcher's full queue drops deltas rather
than holding the others (the offsets show the gap). When the connection drops, the hub
reconnects and subscribes every watched channel again; deltas published meanwhile are lost
(best effort, like all of pub/sub: the final document has the whole text).

>>> hub = StreamHub(redis)                                    # doctest: +SKIP
>>> async with hub.watch("acme~job-1", queue):                # doctest: +SKIP
...     delta = await queue.get()                            # a shared.job_stream.Delta
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from shared.job_stream import channel, decode
from shared.loop_thread import cancel_task

log = logging.getLogger(__name__)
MAX_QUEUED: Final = 256  # deltas waiting for one watcher; more are dropped for it
ACK_SECONDS: Final = 2.0  # how long a new watcher waits for Redis to confirm its subscription
_RECONNECT_MIN: Final = 0.2
_RECONNECT_MAX: Final = 5.0


class StreamHub:
    """Fan deltas out to watchers; the connection and its reader start on first use."""

    def __init__(self, redis: aioredis.Redis, *, max_queued: int = MAX_QUEUED) -> None:
        self._r = redis
        self._max_queued = max_queued
        self._watchers: dict[str, set[asyncio.Queue[Any]]] = {}  # channel -> queues
        self._ready: dict[str, asyncio.Future[None]] = {}  # channel -> subscription confirmed
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one (un)subscribe or reconnect at a time, in order
        self._closed = False
        self.subscriptions = 0  # times the connection was (re)opened
        self.dropped = 0  # deltas not queued: a watcher's queue was full

    @property
    def channels(self) -> int:
        return len(self._watchers)

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str, queue: asyncio.Queue[Any]) -> AsyncIterator[None]:
        """Put ``job_id``'s deltas in ``queue`` while inside. On entry the subscription is
        confirmed by Redis (or ``ACK_SECONDS`` passed): deltas published from then on arrive."""
        ch = channel(job_id)
        queues = self._watchers.setdefault(ch, set())
        queues.add(queue)
        try:
            if len(queues) == 1:
                ready = asyncio.get_running_loop().create_future()
                self._ready[ch] = ready
                await self._subscribe(ch)
            else:
                ready = self._ready.get(ch) or asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ready), ACK_SECONDS)
            yield
        finally:
            queues.discard(queue)
            if not queues and self._watchers.get(ch) is queues:
                del self._watchers[ch]
                self._ready.pop(ch, None)
                await self._unsubscribe(ch)

    async def aclose(self) -> None:
        self._closed = True
        await cancel_task(self._task)
        self._task = None
        await self._drop_connection()

    # -- the one connection ----------------------------------------------------------------------
    async def _subscribe(self, ch: str) -> None:
        try:
            async with self._lock:
                if self._closed:
                    return
                if self._pubsub is None:
                    await self._open()  # subscribes every watched channel, this one included
                else:
                    await self._pubsub.subscribe(ch)
        except Exception as exc:  # Redis down: the reader reconnects and subscribes it then
            log.warning("stream hub: subscribe failed (%s)", type(exc).__name__)
            self._restart()

    async def _unsubscribe(self, ch: str) -> None:
        try:
            async with self._lock:
                if self._pubsub is not None and ch not in self._watchers:
                    await self._pubsub.unsubscribe(ch)
        except Exception as exc:  # best effort: a reconnect subscribes only watched channels
            log.debug("stream hub: unsubscribe failed (%s)", type(exc).__name__)

    async def _open(self) -> None:
        """A new connection subscribed to every watched channel, and its reader (lock held)."""
        pubsub = self._r.pubsub()
        self._pubsub = pubsub
        self.subscriptions += 1
        if self._watchers:
            await pubsub.subscribe(*self._watchers)
        self._restart()

    def _restart(self) -> None:
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="imgq-stream-hub")

    async def _drop_connection(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _run(self) -> None:
        delay = _RECONNECT_MIN
        while not self._closed:
            try:
                async with self._lock:
                    if self._pubsub is None:
                        if not self._watchers:
                            return  # nothing to watch: the next watcher opens it again
                        await self._open()
                    pubsub = self._pubsub
                if pubsub is not None:
                    await self._read(pubsub)
                return  # the connection was dropped on purpose (closing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream hub: connection lost (%s); reconnecting", type(exc).__name__)
                async with self._lock:
                    await self._drop_connection()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)

    async def _read(self, pubsub: PubSub) -> None:
        while pubsub is self._pubsub:
            msg = await pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            ch = msg.get("channel")
            name = ch.decode() if isinstance(ch, bytes) else str(ch)
            kind = msg.get("type")
            if kind == "subscribe":
                ready = self._ready.get(name)
                if ready is not None and not ready.done():
                    ready.set_result(None)
            elif kind == "message":
                self._dispatch(name, msg.get("data"))

    def _dispatch(self, name: str, data: Any) -> None:
        queues = self._watchers.get(name)
        if not queues or not isinstance(data, bytes | str):
            return
        delta = decode(data)
        if delta is None:
            return
        for q in queues:
            if q.qsize() < self._max_queued:
                q.put_nowait(delta)
            else:
                self.dropped += 1
