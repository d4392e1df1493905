"""The per-process worker runtime: one event loop thread, one AsyncOpenAI client, built lazily.

Celery's threads pool runs each task in its own thread; the task hands its coroutine to the one
loop (``run_coroutine_threadsafe``) and waits. Everything bound to the loop (the OpenAI client,
Redis pools, the aiohttp session) is created *on* it, on first use, after any fork.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import redis.asyncio as aioredis
from pydantic import ValidationError

from shared import dlq, text_tokens
from shared.errors import InvalidJobError
from shared.images import make_fetch_session
from shared.jobs import ErrorInfo, Job, Result
from shared.limiter import AdaptiveConcurrency, LimitsConfig, RedisLimiter, key_fingerprint
from shared.loop_lag import LoopLagMonitor
from shared.loop_thread import LoopThread
from shared.metrics import Metrics
from shared.redis_coalesce import CoalescingRedis
from shared.settings import Settings
from shared.storage import build_stores
from workers.batcher import Batcher, start_batcher
from workers.deps import WorkerDeps
from workers.locks import Heartbeat, JobLocks
from workers.processor import DeliveryError, process_job
from workers.reconciler import Reconciler
from workers.retry import MAX_RETRY_AFTER_SECONDS
from workers.tenant_weights import WeightsRefresher, initial_weights
from workers.webhooks import start_webhooks

log = logging.getLogger(__name__)
# Simulators and local servers need a key to be present, never a real one.
PLACEHOLDER_API_KEY = "sk-imgq-no-key"


class WorkerRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        redis_url: str,
        broker_url: str | None = None,
        metrics: Metrics | None = None,
        delivery_tags: Callable[[], Iterable[str]] = list,
        celery_app: Any | None = None,  # given: this process also runs the reconciler
    ) -> None:
        self.settings = settings
        self._celery_app = celery_app
        self._background: list[Any] = []  # loop-lag monitor, reconciler (issue 9)
        self.redis_url = redis_url
        self.broker_url = broker_url
        self.metrics = metrics or Metrics()
        self._delivery_tags = delivery_tags
        self._loop = LoopThread("imgq-worker-loop")
        self._lock = threading.Lock()
        self._deps: WorkerDeps | None = None
        self._heartbeat: Heartbeat | None = None
        self._batcher: Batcher | None = None  # the batch route's (elected) batcher
        self._closers: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def deps(self) -> WorkerDeps:
        deps = self._deps
        if deps is None:
            with self._lock:
                if self._deps is None:
                    self._deps = self._loop.run(self._build(), timeout=60)
                deps = self._deps
        return deps

    async def _build(self) -> WorkerDeps:
        s = self.settings
        # Load the tokenizer now (~0.5 s), not inside the first job's latency.
        await asyncio.get_running_loop().run_in_executor(None, text_tokens.encoding)
        pool = aioredis.BlockingConnectionPool.from_url(
            self.redis_url, max_connections=max(16, s.worker_concurrency // 4), timeout=30
        )
        # One round trip for the commands of every job on this loop turn (shared/redis_coalesce.py).
        r = CoalescingRedis(connection_pool=pool)
        images, results, events = build_stores(s, r)
        api_key = s.openai_api_key.get_secret_value() if s.openai_api_key else PLACEHOLDER_API_KEY
        client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=s.openai_base_url,
            max_retries=0,  # our retry policy owns retries (workers/retry.py)
            timeout=s.request_timeout_seconds,
            http_client=openai.DefaultAioHttpClient(timeout=s.request_timeout_seconds),
        )
        # Start high: the fleet limiter already keeps calls within TPM/RPM, so the local cap
        # only has to protect this process and back off on 429s and timeouts.
        concurrency = AdaptiveConcurrency(
            initial=min(512, s.max_in_flight), minimum=4, maximum=s.max_in_flight
        )
        broker = None
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            broker = aioredis.from_url(self.broker_url)
        locks = JobLocks(r, state_ttl_seconds=s.result_ttl_seconds)
        self._heartbeat = Heartbeat(locks, broker, self._delivery_tags)
        self._heartbeat.start()
        http = make_fetch_session(s)
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="imgq-images")
        self._closers = [client, http, r, broker, executor]
        weights = await initial_weights(r, s.tenant_weights)
        deps = WorkerDeps(
            settings=s,
            client=client,
            redis=r,
            images=images,
            results=results,
            events=events,
            # Issue 11: tenants' weights (their API keys) for the fair share, kept current below.
            limiter=RedisLimiter(r, LimitsConfig.from_settings(s, tenant_weights=weights)),
            concurrency=concurrency,
            metrics=self.metrics,
            locks=locks,
            account=key_fingerprint(api_key, s.openai_base_url),
            executor=executor,
            http=http,
        )
        self._batcher = start_batcher(deps, self.broker_url)  # issue 14
        self._closers.insert(0, start_webhooks(deps))  # issue 11: closed before the clients
        self._start_background(deps)
        refresher = WeightsRefresher(r, weights, base=s.tenant_weights)  # stopped in _close
        refresher.start()
        self._background.append(refresher)
        return deps

    def _start_background(self, deps: WorkerDeps) -> None:
        """Issue 9: measure the loop's lag; run the (elected) reconciler."""
        lag = LoopLagMonitor(self.metrics.event_loop_lag_seconds.observe)
        self._background = [lag]
        if self._celery_app is not None:
            self._background.append(Reconciler(deps, self._celery_app))
        for task in self._background:
            task.start()

    def begin_drain(self) -> None:
        """Warm shutdown began: jobs only waiting for capacity go back to the queue now."""
        deps = self._deps
        if deps is not None:
            self._loop.loop.call_soon_threadsafe(deps.drain.start)

    def shutdown(self) -> None:
        """Close clients on their loop, then stop the loop (from Celery's worker_shutdown)."""
        if self._deps is not None:
            try:
                self._loop.run(self._close(), timeout=15)
            except Exception:
                log.warning("worker runtime did not close cleanly", exc_info=True)
            self._deps = None
        self._loop.stop()

    async def _close(self) -> None:
        for task in self._background:
            await task.stop()
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        if self._batcher is not None:
            await self._batcher.stop()
        for c in self._closers:
            if c is None:
                continue
            if isinstance(c, ThreadPoolExecutor):
                c.shutdown(wait=False)
            elif isinstance(c, openai.AsyncOpenAI):
                await c.close()
            else:
                await c.aclose() if hasattr(c, "aclose") else await c.close()

    # -- jobs --------------------------------------------------------------------------------
    def max_job_seconds(self) -> float:
        s = self.settings
        per_attempt = s.request_timeout_seconds + MAX_RETRY_AFTER_SECONDS
        return s.capacity_wait_seconds + s.max_attempts * per_attempt + 60

    def run_job(self, payload: dict[str, Any]) -> str | None:
        """Run one job to its terminal result; its status (called from a Celery pool thread).

        The Result itself is in the result store: nothing else is serialised here.

        Raises what the task must hand back to the broker (see workers/tasks.py).
        """
        try:
            job = Job.model_validate(payload)
        except ValidationError as exc:
            # Retrying cannot help a message that is not a job: fail it (if it names one), ack.
            log.error("malformed job message dropped: %s", exc.errors()[:3])
            job_id = payload.get("job_id") if isinstance(payload, dict) else None
            if isinstance(job_id, str) and job_id:
                self._loop.run(self._fail_malformed(job_id), timeout=60)
            return None
        deps = self.deps()
        try:
            result = self._loop.run(process_job(job, deps), timeout=self.max_job_seconds())
        except TimeoutError as exc:
            raise DeliveryError(
                f"the job did not finish within {self.max_job_seconds():.0f}s", deliveries=1
            ) from exc
        return result.status

    async def _fail_malformed(self, job_id: str) -> None:
        deps = self.deps()
        current = await deps.results.get(job_id)
        if current is not None and current.done:
            return
        result = current or Result(job_id=job_id)
        result.status = "failed"
        result.error = ErrorInfo(
            code=InvalidJobError.code, message="the job message could not be read", retryable=False
        )
        await deps.results.put(result)
        await dlq.add(deps.redis, job_id)
        await deps.events.publish(job_id, "failed")

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run any coroutine on the worker loop (tests, shutdown hooks)."""
        return self._loop.run(coro, timeout=timeout)
