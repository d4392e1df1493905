"""Everything a job needs, built once per worker process and passed in (tests build their own)."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

import aiohttp
import openai
import redis.asyncio as aioredis

from shared.images.budget import ImageLimits
from shared.limiter import AdaptiveConcurrency, Limiter
from shared.metrics import Metrics
from shared.settings import Settings
from shared.storage import ImageStore, JobEvents, ResultStore
from workers.drain import Drain
from workers.locks import JobLocks


@dataclass
class WorkerDeps:
    settings: Settings
    client: openai.AsyncOpenAI
    redis: aioredis.Redis
    images: ImageStore
    results: ResultStore
    events: JobEvents
    limiter: Limiter
    concurrency: AdaptiveConcurrency
    metrics: Metrics
    locks: JobLocks
    account: str  # API-key fingerprint: the limiter's key, never the key itself
    executor: Executor | None = None  # for CPU-bound image work; None = the loop's default
    http: aiohttp.ClientSession | None = None  # for fetching image URLs
    drain: Drain = field(default_factory=Drain)
    image_limits: ImageLimits | None = None  # decode budget + loads: built on the loop at first use
