"""RedisLimiter against a real Redis: grants, over-grant under concurrency, settle/release,
too-large requests, timeouts, header resync and limit discovery, clock handling."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import redis

from shared.errors import CapacityWaitTimeoutError, RequestTooLargeError
from shared.limiter import (
    LimitKey,
    LimitsConfig,
    ModelLimits,
    RedisLimiter,
    Reservation,
    key_fingerprint,
)
from tests.limiter.helpers import MODEL, config, make, max_in_any_window

KEY = LimitKey(MODEL, key_fingerprint("sk-test", "http://sim/v1"))


async def call(lim: RedisLimiter, tokens: int, **kw: object) -> Reservation:
    """Acquire, and settle at once as a call billed exactly as reserved."""
    r = await lim.acquire(KEY, tokens, **kw)  # type: ignore[arg-type]
    await lim.settle(r, prompt_tokens=tokens, completion_tokens=0)
    return r


async def test_grants_until_full_then_waits(redis_url: str) -> None:
    lim = make(redis_url, config(1000, 100))
    a = await lim.acquire(KEY, 600)
    b = await lim.acquire(KEY, 400)
    assert a.id != b.id and a.key == KEY and a.tokens == 600
    snap = await lim.snapshot(KEY)
    assert (snap.tokens_reserved, snap.tokens_used, snap.requests) == (1000, 0, 2)
    assert snap.tpm == 1000 and snap.tpm_source == "configured"
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.3)
    # the timed-out waiter left nothing behind
    assert (await lim.snapshot(KEY)).requests == 2


async def test_rpm_limits_too(redis_url: str) -> None:
    lim = make(redis_url, config(100_000, 3))
    for _ in range(3):
        await lim.acquire(KEY, 1)
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.2)


async def test_request_too_large_fails_fast(redis_url: str) -> None:
    lim = make(redis_url, config(6000, 60))
    t0 = time.monotonic()
    with pytest.raises(RequestTooLargeError) as err:
        await lim.acquire(KEY, 6001, timeout=30)
    assert time.monotonic() - t0 < 0.5
    assert err.value.code == "request_too_large"
    await lim.acquire(KEY, 6000)  # exactly the limit fits
    # behind a queue too: a too-large waiter fails at once and does not block the ones after it
    waiting = asyncio.create_task(lim.acquire(KEY, 10, timeout=5))
    await asyncio.sleep(0.05)
    with pytest.raises(RequestTooLargeError):
        await lim.acquire(KEY, 7000, timeout=5)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_many_coroutines_never_over_grant(redis_url: str) -> None:
    """400 coroutines ask for random sizes at once: exactly what fits is granted, no more."""
    lim = make(redis_url, config(20_000, 1000))
    rng = random.Random(4)
    sizes = [rng.randint(50, 400) for _ in range(400)]

    async def one(n: int) -> int:
        try:
            await lim.acquire(KEY, n, timeout=0.5)
            return n
        except CapacityWaitTimeoutError:
            return 0

    granted = await asyncio.gather(*(one(n) for n in sizes))
    total = sum(granted)
    assert total <= 20_000
    assert total >= 20_000 - max(sizes)  # and the limit is actually used
    assert (await lim.snapshot(KEY)).tokens_reserved == total


async def test_sliding_window_over_time_never_over_grants(redis_url: str) -> None:
    """With a 1-s window, 60 coroutines acquire for 3 s: every 1-s window stays within the limit,
    and capacity is reused as grants leave the window."""
    lim = make(redis_url, config(3000, 40, window_s=1.0))
    grants: list[tuple[int, int]] = []
    deadline = time.monotonic() + 3.0
    rng = random.Random(7)

    async def loop() -> None:
        while time.monotonic() < deadline:
            n = rng.randint(20, 300)
            try:
                r = await call(lim, n, timeout=max(0.01, deadline - time.monotonic()))
            except CapacityWaitTimeoutError:
                return
            grants.append((r.granted_at_ms, n))

    await asyncio.gather(*(loop() for _ in range(60)))
    tok, req = max_in_any_window(grants, 1000)
    assert tok <= 3000 and req <= 40
    assert sum(n for _, n in grants) >= 2 * 3000 * 0.8  # about 3 windows' worth went through


async def test_waiters_share_one_connection_and_do_not_block_the_loop(redis_url: str) -> None:
    lim = RedisLimiter(
        redis.asyncio.Redis.from_url(redis_url, client_name="waiters-test"),
        config(100, 1000, window_s=1.0),
    )
    await call(lim, 100)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    waiters = [asyncio.create_task(call(lim, 1, timeout=5)) for _ in range(300)]
    await asyncio.sleep(0.5)
    clients = [
        c for c in redis.Redis.from_url(redis_url).client_list() if c["name"] == "waiters-test"
    ]
    assert 1 <= len(clients) <= 5  # fast asks (4) + the pump: not one per waiter
    assert ticks >= 25  # the loop kept running while they wait
    done = await asyncio.gather(*waiters)  # 100 fit per 1-s window: all in ~3 s
    assert sum(r.tokens for r in done) == 300
    t.cancel()


async def test_settle_refunds_and_charges(redis_url: str) -> None:
    lim = make(redis_url, config(2000, 100))
    r = await lim.acquire(KEY, 1500, max_output_tokens=500)  # estimate: 1000 prompt + 500 out
    await lim.settle(r, prompt_tokens=700, completion_tokens=42)  # API counted 700 + 500
    snap = await lim.snapshot(KEY)
    assert (snap.tokens_used, snap.tokens_reserved) == (1200, 0)
    r2 = await lim.acquire(KEY, 700, timeout=0.2, max_output_tokens=100)  # fits thanks to refund
    await lim.settle(r2, prompt_tokens=650, completion_tokens=1)  # under-estimated: charge more
    snap = await lim.snapshot(KEY)
    assert snap.tokens_used == 1200 + 750 and snap.tokens_available == 50
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 51, timeout=0.2)
    await lim.acquire(KEY, 50, timeout=0.2)


async def test_settle_exact_accounting(redis_url: str) -> None:
    lim = make(redis_url, config(10_000, 100))
    r = await lim.acquire(KEY, 300)
    await lim.settle(r, prompt_tokens=10, completion_tokens=5)
    assert (await lim.snapshot(KEY)).tokens_used == 300  # max(reserved, prompt+completion)
    r = await lim.acquire(KEY, 300)
    await lim.settle(r, prompt_tokens=390, completion_tokens=5)
    assert (await lim.snapshot(KEY)).tokens_used == 300 + 395


async def test_release_uncounted_returns_tokens_and_request(redis_url: str) -> None:
    lim = make(redis_url, config(1000, 2))
    a = await lim.acquire(KEY, 900)
    b = await lim.acquire(KEY, 100)
    waiting = asyncio.create_task(lim.acquire(KEY, 800, timeout=2))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await lim.release(a, counted=False)  # e.g. a 429: the API never admitted it
    got = await asyncio.wait_for(waiting, 1)  # woken at once by the local refund
    assert got.tokens == 800
    await lim.release(b, counted=True)  # e.g. a timeout after sending: the API counted it
    snap = await lim.snapshot(KEY)
    assert (snap.tokens_used, snap.tokens_reserved, snap.requests) == (100, 800, 2)
    await lim.release(b, counted=False)  # released twice: the second one still removes it
    await lim.release(b, counted=False)  # ...and a third is a no-op
    assert (await lim.snapshot(KEY)).requests == 1


async def test_cancelled_waiter_leaks_nothing(redis_url: str) -> None:
    lim = make(redis_url, config(100, 100, window_s=0.5))
    await call(lim, 100)
    tasks = [asyncio.create_task(lim.acquire(KEY, 60)) for _ in range(5)]
    await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.6)
    snap = await lim.snapshot(KEY)
    assert snap.requests == 0 and snap.tokens_reserved == 0


async def test_cooldown_pauses_then_lifts(redis_url: str) -> None:
    lim = make(redis_url, config(10_000, 100))
    await lim.cooldown(KEY, 0.6)
    await lim.cooldown(KEY, 0.1)  # a shorter one does not cut the pause
    snap = await lim.snapshot(KEY)
    assert 0.4 < snap.cooldown_s <= 0.6
    t0 = time.monotonic()
    await lim.acquire(KEY, 10, timeout=3)
    assert 0.45 < time.monotonic() - t0 < 1.5


async def test_headers_discover_limits_and_resync(redis_url: str) -> None:
    cfg = LimitsConfig(window_s=60, margin_s=0)  # nothing configured: tier default first
    lim = make(redis_url, cfg)
    snap = await lim.snapshot(KEY)
    assert snap.tpm_source == "default" and snap.tpm == 200_000
    r = await lim.acquire(KEY, 1000)
    # limit unknown: only this probe may be in flight until its answer brings the headers
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 10, timeout=0.3)
    await lim.observe_headers(KEY, {
        "x-ratelimit-limit-tokens": "6000", "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-tokens": "5000", "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-tokens": "10s",
    })  # fmt: skip
    snap = await lim.snapshot(KEY)
    assert (snap.tpm, snap.rpm, snap.tpm_source) == (6000, 60, "discovered")
    assert snap.resyncs == 0 and snap.tokens_reserved == 1000  # headers agree with us
    # another client used 3000 tokens of this key: the API has less left than we think
    await lim.observe_headers(KEY, {"x-ratelimit-remaining-tokens": "2000"})
    snap = await lim.snapshot(KEY)
    assert snap.resyncs == 1 and snap.tokens_used + snap.tokens_reserved == 4000
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 2500, timeout=0.2)
    await lim.settle(r, prompt_tokens=1000, completion_tokens=0)
    # no headers (an OpenAI-compatible server without them) changes nothing
    await lim.observe_headers(KEY, {"content-type": "application/json"})
    assert (await lim.snapshot(KEY)).resyncs == 1


async def test_server_without_headers_ends_the_probe(redis_url: str) -> None:
    lim = make(redis_url, LimitsConfig())
    await lim.acquire(KEY, 1000)
    await lim.observe_headers(KEY, {"content-type": "application/json"})  # e.g. vLLM, Ollama
    for _ in range(5):
        await lim.acquire(KEY, 1000, timeout=0.3)  # tier defaults, concurrently
    assert (await lim.snapshot(KEY)).tpm_source == "default"


async def test_configured_limit_vs_discovered(redis_url: str) -> None:
    cfg = LimitsConfig(configured={MODEL: ModelLimits(tpm=4000)})
    lim = make(redis_url, cfg)
    await lim.observe_headers(KEY, {"x-ratelimit-limit-tokens": "9000"})
    snap = await lim.snapshot(KEY)
    assert (snap.tpm, snap.tpm_source) == (4000, "configured")  # a share of a bigger key
    await lim.observe_headers(KEY, {"x-ratelimit-limit-tokens": "3000"})
    snap = await lim.snapshot(KEY)
    assert (snap.tpm, snap.tpm_source) == (3000, "discovered")  # the API knows better
    assert snap.rpm_source == "default"
    with pytest.raises(RequestTooLargeError):
        await lim.acquire(KEY, 3500)


async def test_keys_are_separate_per_model_and_account(redis_url: str) -> None:
    lim = make(redis_url, config(1000, 100))
    await lim.acquire(KEY, 1000)
    other_account = LimitKey(MODEL, key_fingerprint("sk-other", None))
    await lim.acquire(other_account, 1000, timeout=0.2)
    await lim.acquire(LimitKey("gpt-4o", KEY.account), 1000, timeout=0.2)
    assert {k.account for k in await lim.known_keys()} == {KEY.account, other_account.account}


class JumpClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_clock_jumping_back_neither_frees_nor_freezes(redis_url: str) -> None:
    clock = JumpClock()
    lim = make(redis_url, config(1000, 100, window_s=1.0), clock=clock)
    await call(lim, 1000)
    clock.offset = -3600.0  # the clock goes back an hour
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.5)  # no capacity freed by the jump...
    t0 = time.monotonic()
    await lim.acquire(KEY, 1000, timeout=2)  # ...and the window still frees ~1 s after the call
    assert time.monotonic() - t0 < 1.2
    snap = await lim.snapshot(KEY)
    assert snap.oldest_age_s is not None and snap.oldest_age_s < 1.0


async def test_clock_jumping_forward_expires_the_window(redis_url: str) -> None:
    clock = JumpClock()
    lim = make(redis_url, config(1000, 100), clock=clock)
    await call(lim, 1000)
    await lim.cooldown(KEY, 30)
    clock.offset = 120.0  # two minutes later by this clock: the grant and the pause are over
    await lim.acquire(KEY, 1000, timeout=0.5)


async def test_default_time_is_redis_server_time(redis_url: str) -> None:
    lim = make(redis_url, config(1000, 100))
    r = await lim.acquire(KEY, 10)
    sec, usec = redis.Redis.from_url(redis_url).time()
    assert abs(sec * 1000 + usec // 1000 - r.granted_at_ms) < 1000


async def test_priority_interactive_first_bulk_not_starved(redis_url: str) -> None:
    lim = make(redis_url, config(100_000, 5, window_s=0.4, interactive_burst=4))
    for _ in range(5):
        await call(lim, 1)
    order: list[str] = []

    async def one(p: str) -> None:
        await call(lim, 1, priority=p, timeout=10)
        order.append(p)

    tasks = [asyncio.create_task(one("bulk")) for _ in range(6)]
    await asyncio.sleep(0.05)
    tasks += [asyncio.create_task(one("interactive")) for _ in range(12)]
    await asyncio.gather(*tasks)
    first10 = order[:10]
    assert first10.count("interactive") == 8 and first10.count("bulk") == 2
    assert order[:4] == ["interactive"] * 4 and order[4] == "bulk"


async def test_redis_down_raises_storage_unavailable() -> None:
    from shared.embedded_redis import free_port
    from shared.errors import StorageUnavailableError

    lim = make(f"redis://127.0.0.1:{free_port()}/0", config(1000, 10))
    with pytest.raises(StorageUnavailableError):
        await lim.acquire(KEY, 1)


def test_limiter_satisfies_protocol(redis_url: str) -> None:
    from shared.limiter import Limiter

    assert isinstance(RedisLimiter(redis.asyncio.Redis.from_url(redis_url), config(1, 1)), Limiter)


async def test_settled_and_external_entries_leave_the_window(redis_url: str) -> None:
    """Entries leave the window whatever their state (settled: no reserved part; external usage:
    zero tokens or zero requests)."""
    lim = make(redis_url, config(1000, 10, window_s=0.3))
    r = await lim.acquire(KEY, 400, max_output_tokens=100)
    await lim.settle(r, prompt_tokens=100, completion_tokens=5)
    await lim.observe_headers(KEY, {"x-ratelimit-remaining-requests": "2"})  # 0 tokens, 7 reqs
    assert (await lim.snapshot(KEY)).requests == 8
    await asyncio.sleep(0.35)
    snap = await lim.snapshot(KEY)
    assert (snap.tokens_used, snap.tokens_reserved, snap.requests) == (0, 0, 0)
    for _ in range(10):
        await lim.acquire(KEY, 100, timeout=0.2)


async def test_in_flight_counts_until_settled_then_a_window_after_the_answer(
    redis_url: str,
) -> None:
    """The API may admit a call later than we granted it: a reservation in flight keeps counting
    past its window, and a settled one counts for a whole window after the answer."""
    lim = make(redis_url, config(1000, 100, window_s=0.4, inflight_grace_s=0.6))
    r = await lim.acquire(KEY, 1000)
    await asyncio.sleep(0.5)  # past the window, still in flight (e.g. a slow upload)
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.1)
    await lim.settle(r, prompt_tokens=1000, completion_tokens=0)  # the answer: re-scored to now
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.3)
    t0 = time.monotonic()
    r2 = await lim.acquire(KEY, 1000, timeout=1)
    assert time.monotonic() - t0 < 0.3  # freed 0.4 s after the settle
    # a worker that died with a reservation in flight: it leaves after window + grace
    t0 = time.monotonic()
    await lim.acquire(KEY, 1, timeout=3)
    assert 0.8 < time.monotonic() - t0 < 1.5
    assert r2.tokens == 1000


async def test_count_from_grant_does_not_extend_on_settle(redis_url: str) -> None:
    lim = make(redis_url, config(1000, 100, window_s=0.4, count_from="grant"))
    r = await lim.acquire(KEY, 1000)
    await asyncio.sleep(0.3)
    await lim.settle(r, prompt_tokens=1000, completion_tokens=0)
    t0 = time.monotonic()
    await lim.acquire(KEY, 1000, timeout=1)
    assert time.monotonic() - t0 < 0.25  # freed 0.4 s after the grant, not after the answer
