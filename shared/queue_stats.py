"""What waits in a Redis broker: per Celery queue, the depth and the age of the job next in line.

kombu's Redis transport keeps each queue as a Redis list (publish is LPUSH, consume is BRPOP, so
the next message sits at the tail), plus one list per priority step, ``<queue>\\x06\\x16<step>``.
A message delivered to a worker leaves the list for kombu's ``unacked`` hash until it is acked.
kombu's messages carry no timestamp of their own; the job in the body carries ``submitted_at``,
so the age is "since the job was submitted" (a job handed back for capacity keeps its age).

>>> queue_keys("bulk")
['bulk', 'bulk\\x06\\x163', 'bulk\\x06\\x166', 'bulk\\x06\\x169']
>>> import base64, json
>>> body = base64.b64encode(json.dumps([[{"job_id": "j", "submitted_at": 100.0}], {}, {}]).encode())
>>> submitted_at(json.dumps({"body": body.decode(), "properties": {"body_encoding": "base64"}}))
100.0
>>> submitted_at(b"not json") is None
True
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel

__all__ = ["UNACKED_KEY", "QueueStats", "queue_keys", "read_queue_stats", "submitted_at"]

UNACKED_KEY: str = Channel.unacked_key  # hash: delivery tag -> message, until acked


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu uses for ``queue`` (one per priority step; step 0 is the bare name)."""
    return [queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS]


def submitted_at(raw: bytes | str) -> float | None:
    """The ``submitted_at`` of the imgq job in one raw kombu message; None if it has none."""
    try:
        message: Any = json.loads(raw)
        body: Any = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]  # Celery protocol 2 body: [args, kwargs, embed]
        value = args[0]["submitted_at"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class QueueStats:
    queue: str
    depth: int  # messages waiting (not yet delivered to any worker)
    oldest_age_s: float  # age of the job next in line; 0 when the queue is empty


def read_queue_stats(client: redis.Redis, queues: Iterable[str], now: float) -> list[QueueStats]:
    """Depth and next-in-line age of each queue, in one round trip (a pipeline)."""
    names = list(queues)
    keys = [queue_keys(q) for q in names]
    pipe = client.pipeline(transaction=False)
    for per_queue in keys:
        for key in per_queue:
            pipe.llen(key)
            pipe.lindex(key, -1)
    replies = iter(pipe.execute())
    out = []
    for name, per_queue in zip(names, keys, strict=True):
        depth, ages = 0, [0.0]
        for _key in per_queue:
            length, tail = next(replies), next(replies)
            depth += int(length or 0)
            stamp = submitted_at(tail) if tail is not None else None
            if stamp is not None:
                ages.append(max(0.0, now - stamp))
        out.append(QueueStats(queue=name, depth=depth, oldest_age_s=max(ages)))
    return out
