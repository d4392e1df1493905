"""Sealing: when a group's pending jobs become a batch, and which of them (the oldest that fit).

A group is due when it is full (50,000 requests, the file size, or the learned enqueued-token
limit) or when its oldest job has waited ``IMGQ_BATCH_LINGER_SECONDS``, or on ``imgq batches
flush``. The decision reads the group's small stats hash (kept by the enqueue and seal
scripts), not its jobs: a group of 50,000 waiting jobs costs one HGETALL of four fields a tick.
"""

from __future__ import annotations

import logging
import time
import uuid

from shared.batch_store import BatchStore, Entry, GroupStats, split_group
from shared.settings import Settings

log = logging.getLogger(__name__)


def chunk(
    entries: list[tuple[str, Entry]], *, max_requests: int, max_bytes: int, max_tokens: int | None
) -> tuple[list[str], bool]:
    """The oldest jobs that fit one batch file, and whether a limit cut the batch (it is full).

    >>> e = Entry(job={}, tokens=10, size=100, at=0.0)
    >>> chunk([("a", e), ("b", e), ("c", e)], max_requests=2, max_bytes=10**6, max_tokens=None)
    (['a', 'b'], True)
    >>> chunk([("a", e), ("b", e)], max_requests=9, max_bytes=250, max_tokens=None)
    (['a', 'b'], False)
    >>> chunk([("a", e), ("b", e)], max_requests=9, max_bytes=10**6, max_tokens=15)
    (['a'], True)
    """
    ids: list[str] = []
    n_bytes = n_tokens = 0
    for job_id, e in entries:
        over_tokens = max_tokens is not None and ids and n_tokens + e.tokens > max_tokens
        if len(ids) >= max_requests or (ids and n_bytes + e.size > max_bytes) or over_tokens:
            return ids, True
        ids.append(job_id)
        n_bytes += e.size
        n_tokens += e.tokens
    return ids, False


def due(stats: GroupStats, limit: int | None, now: float, s: Settings) -> bool:
    """Full (a file limit or the token limit reached), or its oldest job lingered enough.

    >>> from shared.settings import Settings
    >>> s = Settings(batch_linger_seconds=60, batch_max_requests=10)
    >>> due(GroupStats(count=3, size=300, tokens=30, first_at=100.0), None, 120.0, s)
    False
    >>> due(GroupStats(count=10, size=300, tokens=30, first_at=100.0), None, 120.0, s)
    True
    >>> due(GroupStats(count=3, size=300, tokens=30, first_at=100.0), 30, 120.0, s)
    True
    """
    average = stats.size / max(1, stats.count)
    return (
        stats.count >= s.batch_max_requests
        or stats.size + average > s.batch_max_file_bytes
        or (limit is not None and stats.tokens >= limit)
        or now - (stats.first_at or 0.0) >= s.batch_linger_seconds
    )


async def seal_groups(store: BatchStore, account: str, s: Settings, *, flush: bool) -> None:
    """Seal every due group of ``account`` into batches (state ``sealed``)."""
    now = time.time()
    for group in await store.groups():
        owner, model, _ = split_group(group)
        if owner != account:
            continue  # another API key's jobs: its own workers batch them
        stats = await store.group_stats(group)
        if stats.count <= 0:
            await store.forget_group_if_empty(group)
            continue
        limit = await store.token_limit(owner, model)
        # first_at 0: jobs given back by a batch over the token limit (shared/batch_unseal.lua):
        # all of them go again at once, in batches under the limit.
        urgent = flush or stats.first_at == 0
        if not (urgent or due(stats, limit, now, s)):
            continue  # decided from the stats alone: the jobs are not read every tick
        entries = sorted((await store.pending(group)).items(), key=lambda kv: kv[1].at)
        while entries:
            ids, full = chunk(
                entries,
                max_requests=s.batch_max_requests,
                max_bytes=s.batch_max_file_bytes,
                max_tokens=limit,
            )
            if not (urgent or full or now - entries[0][1].at >= s.batch_linger_seconds):
                break
            bid = f"ib_{uuid.uuid4().hex[:20]}"
            rest = entries[len(ids) :]
            n = await store.seal(group, bid, ids, next_first_at=rest[0][1].at if rest else None)
            log.info("batch %s sealed: %d jobs of %s", bid, n, group)
            await store.touch_jobs(bid)
            entries = rest
