"""The batch route's state in Redis: pending jobs per group and each batch's state machine.

A batch goes ``sealed -> uploading -> uploaded -> creating -> created -> downloading -> done``;
every step is a compare-and-set on its ``state`` (shared/batch_cas.lua), so the batcher that
resumes after a crash (or a second batcher) continues where the first stopped and never takes
a step twice. Keys (``<g>`` = ``account|model|endpoint``, the account a key fingerprint):

  imgq:bq:groups              set of groups with pending jobs
  imgq:bq:pending:<g>         hash job id -> entry JSON {job, tokens, bytes, at}
  imgq:bq:stats:<g>           hash count, bytes, tokens, first_at of the pending jobs
  imgq:bq:line:<job>          the job's Batch API request line (JSONL, images inlined)
  imgq:bq:member:<job>        "pending" or the batch id: a job joins one batch, once
  imgq:bq:batch:<id>          hash: the batch record (state, file_id, openai_batch_id, ...)
  imgq:bq:batch:<id>:jobs     hash job id -> entry JSON;  <id>:applied: job id -> outcome
  imgq:bq:batches / :active   zset of every batch by creation time / set of unfinished ones
  imgq:bq:flush               "send every pending job now" (``imgq batches flush``)
  imgq:bq:limit:<acct>|<model> the enqueued-token limit learned from the API's errors

>>> group_key("ab12", "gpt-4o", "/v1/chat/completions")
'ab12|gpt-4o|/v1/chat/completions'
>>> split_group("ab12|gpt-4o|/v1/chat/completions")
('ab12', 'gpt-4o', '/v1/chat/completions')
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.jobstate import OPEN_JOBS, STATE_PREFIX
from shared.lua import load_lua

P = "imgq:bq:"
GROUPS = P + "groups"
BATCHES = P + "batches"
ACTIVE = P + "active"
FLUSH = P + "flush"
MEMBER = P + "member:"
STATES = ("sealed", "uploading", "uploaded", "creating", "created", "downloading", "done")


def group_key(account: str, model: str, endpoint: str) -> str:
    return f"{account}|{model}|{endpoint}"


def split_group(group: str) -> tuple[str, str, str]:
    account, model, endpoint = group.split("|", 2)
    return account, model, endpoint


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_FORGET = """
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
end
return 0
"""


@dataclass(frozen=True)
class GroupStats:
    """What a group holds, kept by the enqueue/seal scripts: read without reading the jobs."""

    count: int
    size: int  # bytes of its request lines
    tokens: int
    first_at: float | None  # when its oldest job was queued


@dataclass(frozen=True)
class Entry:
    """One job waiting in a group or held by a batch."""

    job: dict[str, Any]  # the Job as JSON (re-routed online from it if the batch fails)
    tokens: int  # exact prompt tokens (what the enqueued-token limit counts)
    size: int  # bytes of its request line
    at: float  # when it was queued for a batch

    def dumps(self) -> str:
        return json.dumps(
            {"job": self.job, "tokens": self.tokens, "bytes": self.size, "at": self.at}
        )

    @classmethod
    def loads(cls, raw: str | bytes) -> Entry:
        d = json.loads(raw)
        return cls(job=d["job"], tokens=int(d["tokens"]), size=int(d["bytes"]), at=float(d["at"]))


class BatchStore:
    """All reads and writes of the batch route's Redis keys (workers and the CLI share it)."""

    def __init__(self, r: aioredis.Redis, *, ttl_seconds: int = 7 * 24 * 3600) -> None:
        self.r = r
        self.ttl = ttl_seconds
        self._enqueue = r.register_script(load_lua("shared", "batch_enqueue.lua"))
        self._seal = r.register_script(load_lua("shared", "batch_seal.lua"))
        self._cas = r.register_script(load_lua("shared", "batch_cas.lua"))
        self._unseal = r.register_script(load_lua("shared", "batch_unseal.lua"))
        self._forget = r.register_script(_FORGET)

    # -- pending jobs ------------------------------------------------------------------------
    async def enqueue(self, job_id: str, group: str, entry: Entry, line: bytes) -> bool:
        """Queue a job for its group; False when it is already pending or in a batch."""
        keys = [MEMBER + job_id, P + "pending:" + group, P + "line:" + job_id, GROUPS,
                P + "stats:" + group]  # fmt: skip
        args: list[str | bytes | int | float] = [
            job_id, entry.dumps(), line, group, self.ttl, entry.size, entry.tokens, entry.at
        ]  # fmt: skip
        return bool(await self._enqueue(keys=keys, args=args))

    async def member(self, job_id: str) -> str | None:
        raw = await self.r.get(MEMBER + job_id)
        return None if raw is None else _s(raw)

    async def groups(self) -> list[str]:
        return sorted(_s(g) for g in await self.r.smembers(GROUPS))  # type: ignore[misc]

    async def pending(self, group: str) -> dict[str, Entry]:
        raw = await self.r.hgetall(P + "pending:" + group)  # type: ignore[misc]
        return {_s(k): Entry.loads(v) for k, v in raw.items()}

    async def pending_count(self) -> int:
        n = 0
        for g in await self.groups():
            n += int(await self.r.hlen(P + "pending:" + g))  # type: ignore[misc]
        return n

    async def group_stats(self, group: str) -> GroupStats:
        raw = await self.r.hgetall(P + "stats:" + group)  # type: ignore[misc]
        d = {_s(k): _s(v) for k, v in raw.items()}
        return GroupStats(
            count=int(d.get("count") or 0),
            size=int(d.get("bytes") or 0),
            tokens=int(d.get("tokens") or 0),
            first_at=float(d["first_at"]) if d.get("first_at") else None,
        )

    async def forget_group_if_empty(self, group: str) -> None:
        # One script: an enqueue between "is it empty?" and "forget it" must not be lost.
        await self._forget(keys=[P + "pending:" + group, GROUPS, P + "stats:" + group],
                           args=[group])  # fmt: skip

    async def lines(self, job_ids: list[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for i in range(0, len(job_ids), 500):
            got = await self.r.mget([P + "line:" + j for j in job_ids[i : i + 500]])
            out += [x.encode() if isinstance(x, str) else x for x in got]
        return out

    async def drop_lines(self, job_ids: list[str]) -> None:
        for i in range(0, len(job_ids), 500):
            await self.r.delete(*[P + "line:" + j for j in job_ids[i : i + 500]])

    # -- batches -----------------------------------------------------------------------------
    async def seal(
        self, group: str, bid: str, job_ids: list[str], *, next_first_at: float | None
    ) -> int:
        """Move ``job_ids`` from the group into a new batch ``bid`` (state ``sealed``).

        ``next_first_at``: when the oldest job left in the group was queued (None: none left).
        """
        account, model, endpoint = split_group(group)
        now = time.time()
        record = {
            "id": bid, "state": "sealed", "group": group, "account": account, "model": model,
            "endpoint": endpoint, "created_at": now, "updated_at": now, "attempt": 1,
        }  # fmt: skip
        keys = [P + "pending:" + group, P + "batch:" + bid, P + "batch:" + bid + ":jobs",
                ACTIVE, BATCHES, P + "stats:" + group]  # fmt: skip
        first = "" if next_first_at is None else repr(next_first_at)
        args: list[str | float | int] = [
            bid, now, self.ttl, MEMBER, json.dumps(record), first, STATE_PREFIX, P + "line:",
            *job_ids,
        ]  # fmt: skip
        return int(await self._seal(keys=keys, args=args))

    async def unseal(self, bid: str, group: str, expected: str) -> int:
        """Give the batch's jobs back to the group (to be sealed smaller); -1: state changed."""
        keys = [P + "batch:" + bid, P + "batch:" + bid + ":jobs", P + "pending:" + group,
                GROUPS, ACTIVE, P + "stats:" + group]  # fmt: skip
        args: list[str | float | int] = [expected, bid, group, MEMBER, self.ttl, time.time()]
        return int(await self._unseal(keys=keys, args=args))

    async def record(self, bid: str) -> dict[str, str] | None:
        raw = await self.r.hgetall(P + "batch:" + bid)  # type: ignore[misc]
        return {_s(k): _s(v) for k, v in raw.items()} or None

    async def transition(self, bid: str, expected: str, **fields: Any) -> bool:
        """Set ``fields`` only if the batch is still in state ``expected``."""
        fields["updated_at"] = time.time()
        args: list[Any] = [expected]
        for k, v in fields.items():
            args += [k, v if isinstance(v, str) else json.dumps(v)]
        return bool(await self._cas(keys=[P + "batch:" + bid], args=args))

    async def update(self, bid: str, **fields: Any) -> None:
        mapping = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        await self.r.hset(P + "batch:" + bid, mapping=mapping)  # type: ignore[arg-type,misc]

    async def active(self) -> list[str]:
        return sorted(_s(b) for b in await self.r.smembers(ACTIVE))  # type: ignore[misc]

    async def finish(self, bid: str) -> None:
        await self.r.srem(ACTIVE, bid)  # type: ignore[misc]

    async def jobs(self, bid: str) -> dict[str, Entry]:
        raw = await self.r.hgetall(P + "batch:" + bid + ":jobs")  # type: ignore[misc]
        return {_s(k): Entry.loads(v) for k, v in raw.items()}

    async def all_jobs_finished(self, bid: str) -> bool:
        """Has every job of ``bid`` finished without it (e.g. all cancelled by their owners)?"""
        ids = [_s(j) for j in await self.r.hkeys(P + "batch:" + bid + ":jobs")]  # type: ignore[misc]
        for i in range(0, len(ids), 1000):
            pipe = self.r.pipeline(transaction=False)
            for job_id in ids[i : i + 1000]:
                pipe.hget(STATE_PREFIX + job_id, "status")
            statuses = await pipe.execute()
            if any(_s(st) not in ("failed", "succeeded") for st in statuses if st is not None):
                return False
        return True

    async def touch_jobs(self, bid: str) -> None:
        """A sign of life for every job of ``bid`` in the open-jobs index (shared/jobstate.py):
        the reconciler leaves jobs waiting in a batch alone instead of re-enqueueing (or
        expiring) them while the Batch API works. XX: a finished job is not added back."""
        ids = [_s(j) for j in await self.r.hkeys(P + "batch:" + bid + ":jobs")]  # type: ignore[misc]
        now_ms = int(time.time() * 1000)
        for i in range(0, len(ids), 1000):
            await self.r.zadd(OPEN_JOBS, {j: now_ms for j in ids[i : i + 1000]}, xx=True)

    async def extend_deadline(self, job_id: str, expires_at: float) -> None:
        """A new deadline for a job sent back online after its batch expired (24 h after it
        was made: the job's own deadline has passed by then, through no fault of its own)."""
        await self.r.hset(STATE_PREFIX + job_id, "expires_at", repr(expires_at))  # type: ignore[misc]

    async def mark_applied(self, bid: str, job_id: str, outcome: str) -> bool:
        """Record a job's outcome once; False if it was already applied (a resumed download)."""
        key = P + "batch:" + bid + ":applied"
        first = bool(await self.r.hsetnx(key, job_id, outcome))  # type: ignore[misc]
        await self.r.expire(key, self.ttl)
        return first

    async def applied(self, bid: str) -> dict[str, str]:
        raw = await self.r.hgetall(P + "batch:" + bid + ":applied")  # type: ignore[misc]
        return {_s(k): _s(v) for k, v in raw.items()}

    async def list_batches(self, limit: int = 50) -> list[dict[str, str]]:
        """The newest ``limit`` batch records, newest first."""
        ids = await self.r.zrevrange(BATCHES, 0, limit - 1)
        out = []
        for bid in ids:
            rec = await self.record(_s(bid))
            if rec is not None:
                out.append(rec)
        return out

    # -- requests from the command line ------------------------------------------------------
    async def request_flush(self) -> None:
        await self.r.set(FLUSH, "1", ex=self.ttl)

    async def take_flush(self) -> bool:
        return bool(await self.r.delete(FLUSH))

    async def request_cancel(self, bid: str) -> bool:
        """Ask the batcher to cancel ``bid``; False if there is no such unfinished batch."""
        if not await self.r.sismember(ACTIVE, bid):  # type: ignore[misc]
            return False
        await self.update(bid, cancel_requested="1")
        return True

    # -- learned limits ----------------------------------------------------------------------
    async def token_limit(self, account: str, model: str) -> int | None:
        raw = await self.r.get(f"{P}limit:{account}|{model}")
        return None if raw is None else int(raw)

    async def learn_token_limit(self, account: str, model: str, limit: int) -> None:
        await self.r.set(f"{P}limit:{account}|{model}", limit, ex=self.ttl)
