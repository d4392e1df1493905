"""The simulated Batch API's state: settings (timing, faults), batches, counters.

Lives on the app under :data:`BATCHES`. Settings come from ``--batch JSON`` and change live
with ``POST /_sim/batch``.

>>> settings_from_json('{"progress_s": 60, "expire_next": 1}').progress_s
60
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web

from simulator.batch_lines import LoadImages

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions")
MAX_REQUESTS_PER_FILE = 50_000
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchSimSettings:
    """How simulated batches behave; every field can be set with ``POST /_sim/batch``."""

    validate_s: float = 0.2  # time in "validating"
    progress_s: float = 0.5  # least time in "in_progress" (the time scale: OpenAI takes hours)
    finalize_s: float = 0.2  # time in "finalizing"
    concurrency: int = 16  # lines answered at once
    line_delay_s: float = 0.0  # each line takes this long (a cancel can catch lines unanswered)
    line_fail_rate: float = 0.0  # share of lines answered 500 (into the error file)
    # custom_id -> HTTP status these lines answer: 400 (invalid_image), 404 (model_not_found),
    # anything else a 500 server_error.
    fail_lines: dict[str, int] = field(default_factory=dict)
    create_delay_s: float = 0.0  # POST /v1/batches creates the batch, then answers this late
    expire_next: int = 0  # the next N batches expire after answering half their lines
    fail_uploads: int = 0  # the next N file uploads answer 500 (kept on the file store)
    upload_delay_s: float = 0.0  # uploads are stored, then answered this late (file store)
    enqueued_token_limit: int | None = None  # per model; None: no limit
    seed: int | None = None


@dataclass
class SimBatch:
    obj: dict[str, Any]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    tokens: int = 0  # enqueued prompt tokens, counted while the batch is active


@dataclass
class BatchState:
    settings: BatchSimSettings = field(default_factory=BatchSimSettings)
    batches: dict[str, SimBatch] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    created: int = 0
    lines_answered: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images_seen: dict[str, int] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    load_images: LoadImages | None = None  # the online path's loader, handed in by app.py

    def counters(self) -> dict[str, Any]:
        return {
            "batches_created": self.created,
            "lines_answered": self.lines_answered,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "images_seen": self.images_seen,
            "by_status": _count_statuses(self.batches.values()),
        }


def _count_statuses(batches: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for b in batches:
        out[b.obj["status"]] = out.get(b.obj["status"], 0) + 1
    return out


BATCHES = web.AppKey("simulator_batches", BatchState)


def now_s() -> int:
    return int(time.time())


def new_batch(
    file_id: str, endpoint: str, window: str, metadata: dict[str, str] | None
) -> SimBatch:
    now = now_s()
    obj: dict[str, Any] = {
        "id": f"batch_{os.urandom(12).hex()}",
        "object": "batch",
        "endpoint": endpoint,
        "model": None,
        "errors": None,
        "input_file_id": file_id,
        "completion_window": window,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + 24 * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "usage": None,
        "metadata": metadata,
    }
    return SimBatch(obj)


def settings_from_json(text: str | None) -> BatchSimSettings:
    """``--batch`` JSON as settings; unknown fields are a ValueError."""
    raw = json.loads(text) if text else {}
    if not isinstance(raw, dict):
        raise ValueError("--batch must be a JSON object")
    unknown = set(raw) - {f.name for f in fields(BatchSimSettings)}
    if unknown:
        raise ValueError(f"unknown batch settings: {sorted(unknown)}")
    return BatchSimSettings(**raw)
