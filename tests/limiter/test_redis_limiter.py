"""RedisLimiter against a real Redis: bucket maths and refill (on a hand-driven clock), settle and
release, too-large requests, timeouts, header resync and limit discovery, cooldown, clock jumps,
images per minute, bounded keys."""

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
from tests.limiter.helpers import MODEL, Clock, config, make

KEY = LimitKey(MODEL, key_fingerprint("sk-test", "http://sim/v1"))


async def level(lim: RedisLimiter, key: LimitKey = KEY) -> float:
    return (await lim.snapshot(key)).tokens_level


async def test_bucket_starts_full_spends_then_refills_at_limit_per_60s(redis_url: str) -> None:
    clock = Clock()
    lim = make(redis_url, config(6000, 600), clock=clock)  # refill: 100 tokens/s
    assert await level(lim) == 6000
    a = await lim.acquire(KEY, 5000)
    b = await lim.acquire(KEY, 1000)  # the whole bucket at once
    assert a.id != b.id and a.tokens == 5000 and a.key == KEY
    snap = await lim.snapshot(KEY)
    assert (snap.tokens_level, snap.tokens_reserved, snap.in_flight) == (0, 6000, 2)
    assert snap.requests_level == 598 and snap.seconds_to_full() == 60
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.3)  # frozen clock: nothing refills
    clock.offset = 0.5
    assert await level(lim) == pytest.approx(50)
    await lim.acquire(KEY, 50, timeout=1)
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.3)
    clock.offset = 600.0  # long idle: full again, never more
    assert await level(lim) == 6000
    assert (await lim.snapshot(KEY)).requests_level == 600


async def test_a_waiter_is_granted_as_soon_as_the_refill_covers_it(redis_url: str) -> None:
    """Real time: 60,000 TPM refills 1,000 tokens/s; after spending the bucket, 5 x 200 tokens
    take ~1 s — the fleet paces at the refill rate with no idle gap."""
    lim = make(redis_url, config(60_000, 6000))
    await lim.acquire(KEY, 60_000)
    t0 = time.monotonic()
    got = await asyncio.gather(*(lim.acquire(KEY, 200, timeout=10) for _ in range(5)))
    took = time.monotonic() - t0
    assert 0.9 < took < 2.0, took
    assert sorted(r.granted_at_ms for r in got) == [r.granted_at_ms for r in got]  # in order


async def test_margin_keeps_back_a_little_of_a_full_bucket(redis_url: str) -> None:
    clock = Clock()
    lim = make(redis_url, config(6000, 600, margin_s=0.6), clock=clock)  # room: 6000 - 60
    await lim.acquire(KEY, 5940)
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.2)
    clock.offset = 60.0
    await lim.acquire(KEY, 6000, timeout=0.5)  # a request above the room waits for a full bucket


async def test_rpm_bucket_limits_too(redis_url: str) -> None:
    lim = make(redis_url, config(100_000, 3), clock=Clock())
    for _ in range(3):
        await lim.acquire(KEY, 1)
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.2)


async def test_request_too_large_fails_fast_even_behind_a_queue(redis_url: str) -> None:
    lim = make(redis_url, config(6000, 60), clock=Clock())
    t0 = time.monotonic()
    with pytest.raises(RequestTooLargeError) as err:
        await lim.acquire(KEY, 6001, timeout=30)
    assert time.monotonic() - t0 < 0.5
    assert err.value.code == "request_too_large"
    await lim.acquire(KEY, 6000)  # exactly the limit fits a full bucket
    waiting = asyncio.create_task(lim.acquire(KEY, 10, timeout=5))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    with pytest.raises(RequestTooLargeError):
        await lim.acquire(KEY, 7000, timeout=5)
    assert time.monotonic() - t0 < 0.5
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_many_coroutines_never_over_grant(redis_url: str) -> None:
    """400 coroutines ask for random sizes at once (frozen clock): what fits is granted, no more."""
    lim = make(redis_url, config(20_000, 1000), clock=Clock())
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
    assert 20_000 - max(sizes) <= total <= 20_000
    await asyncio.sleep(0.3)  # the pump takes the timed-out waiters out of the fleet queue
    snap = await lim.snapshot(KEY)
    assert snap.tokens_reserved == total and snap.waiting == 0  # timed-out waiters left the queue


async def test_grants_over_time_follow_the_bucket(redis_url: str) -> None:
    """Real time, 60 coroutines for 3 s at 3,000 TPM (50/s): every prefix of the grants fits
    ``capacity + refill x elapsed``, and the total reaches it (no idle gaps)."""
    lim = make(redis_url, config(3000, 10_000))
    grants: list[tuple[int, int]] = []
    t_end = time.monotonic() + 3.0
    rng = random.Random(7)

    async def loop() -> None:
        while time.monotonic() < t_end:
            n = rng.randint(5, 60)
            try:
                r = await lim.acquire(KEY, n, timeout=max(0.01, t_end - time.monotonic()))
            except CapacityWaitTimeoutError:
                return
            await lim.settle(r, prompt_tokens=n, completion_tokens=0)
            grants.append((r.granted_at_ms, n))

    await asyncio.gather(*(loop() for _ in range(60)))
    grants.sort()
    t0, total = grants[0][0], 0
    for t, n in grants:
        total += n
        assert total <= 3000 + 50 * (t - t0) / 1000 + 1e-6
    elapsed = (grants[-1][0] - t0) / 1000
    assert total >= 3000 + 50 * elapsed - 60 - 50 * 0.3  # one request and a poll behind at most


async def test_settle_refunds_and_charges(redis_url: str) -> None:
    lim = make(redis_url, config(2000, 100), clock=Clock())
    r = await lim.acquire(KEY, 1500, max_output_tokens=500)  # estimate: 1000 prompt + 500 out
    await lim.settle(r, prompt_tokens=700, completion_tokens=42)  # API counted 700 + 500
    snap = await lim.snapshot(KEY)
    assert (snap.tokens_level, snap.tokens_reserved, snap.in_flight) == (800, 0, 0)
    r2 = await lim.acquire(KEY, 700, timeout=0.2, max_output_tokens=100)  # fits thanks to refund
    await lim.settle(r2, prompt_tokens=650, completion_tokens=1)  # under-estimated: charge more
    assert await level(lim) == 50
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 51, timeout=0.2)
    r3 = await lim.acquire(KEY, 50, timeout=0.2, max_output_tokens=10)
    await lim.settle(r3, prompt_tokens=90, completion_tokens=1)  # 100 charged: in debt
    assert await level(lim) == -50


async def test_settle_without_max_output_charges_at_least_the_reservation(redis_url: str) -> None:
    lim = make(redis_url, config(10_000, 100), clock=Clock())
    r = await lim.acquire(KEY, 300)
    await lim.settle(r, prompt_tokens=10, completion_tokens=5)
    assert await level(lim) == 10_000 - 300
    r = await lim.acquire(KEY, 300)
    await lim.settle(r, prompt_tokens=390, completion_tokens=5)
    assert await level(lim) == 10_000 - 300 - 395


async def test_release_uncounted_returns_tokens_and_request_once(redis_url: str) -> None:
    lim = make(redis_url, config(1000, 2), clock=Clock())
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
    assert (snap.tokens_level, snap.tokens_reserved, snap.requests_level) == (100, 800, 0)
    await lim.release(b, counted=False)  # already finished: no refund
    await lim.release(got, counted=False)
    await lim.release(got, counted=False)  # twice: refunded once
    snap = await lim.snapshot(KEY)
    assert (snap.tokens_level, snap.requests_level, snap.in_flight) == (900, 1, 0)


async def test_timed_out_and_cancelled_waiters_leave_nothing(redis_url: str) -> None:
    lim = make(redis_url, config(100, 100), clock=Clock())
    await lim.acquire(KEY, 100)
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 1, timeout=0.3)
    tasks = [asyncio.create_task(lim.acquire(KEY, 60)) for _ in range(5)]
    await asyncio.sleep(0.2)
    assert (await lim.snapshot(KEY)).waiting_interactive == 5
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.3)  # the pump takes them out of the fleet queue
    snap = await lim.snapshot(KEY)
    assert (snap.waiting, snap.in_flight, snap.tokens_level) == (0, 1, 0)


async def test_cooldown_pauses_then_lifts(redis_url: str) -> None:
    lim = make(redis_url, config(10_000, 100))
    await lim.cooldown(KEY, 0.6)
    await lim.cooldown(KEY, 0.1)  # a shorter one does not cut the pause
    snap = await lim.snapshot(KEY)
    assert 0.4 < snap.cooldown_s <= 0.6
    t0 = time.monotonic()
    await lim.acquire(KEY, 10, timeout=3)
    assert 0.45 < time.monotonic() - t0 < 1.5


async def test_headers_discover_limits_and_resync_never_raises(redis_url: str) -> None:
    clock = Clock()
    lim = make(redis_url, LimitsConfig(margin_s=0), clock=clock)  # nothing configured
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
    assert snap.resyncs == 0 and snap.tokens_level == 5000  # what we spent is kept
    # headers showing MORE than we hold never raise the level (others may share the key)
    await lim.observe_headers(KEY, {"x-ratelimit-remaining-tokens": "6000",
                                    "x-ratelimit-remaining-requests": "60"})  # fmt: skip
    assert await level(lim) == 5000 and (await lim.snapshot(KEY)).requests_level == 59
    # within the tolerance (5 % of the limit): an answer's figure is as old as its latency
    await lim.observe_headers(KEY, {"x-ratelimit-remaining-tokens": "4800"})
    assert await level(lim) == 5000
    # another client used 3000 tokens of this key: the API has less left than we hold
    await lim.settle(r, prompt_tokens=1000, completion_tokens=0,
                     headers={"x-ratelimit-remaining-tokens": "2000"})  # fmt: skip
    snap = await lim.snapshot(KEY)
    assert snap.resyncs == 1 and snap.tokens_level == 2000 and snap.in_flight == 0
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 2500, timeout=0.2)
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
    lim = make(redis_url, LimitsConfig(configured={MODEL: ModelLimits(tpm=4000)}))
    await lim.observe_headers(KEY, {"x-ratelimit-limit-tokens": "9000"})
    snap = await lim.snapshot(KEY)
    assert (snap.tpm, snap.tpm_source) == (4000, "configured")  # a share of a bigger key
    await lim.observe_headers(KEY, {"x-ratelimit-limit-tokens": "3000"})
    snap = await lim.snapshot(KEY)
    assert (snap.tpm, snap.tpm_source) == (3000, "discovered")  # the API knows better
    assert snap.rpm_source == "default"
    with pytest.raises(RequestTooLargeError):
        await lim.acquire(KEY, 3500)


async def test_images_per_minute_bucket(redis_url: str) -> None:
    cfg = LimitsConfig(configured={"gpt-image-1": ModelLimits(100_000, 100, ipm=5)}, margin_s=0)
    lim = make(redis_url, cfg, clock=Clock())
    key = LimitKey("gpt-image-1", KEY.account)
    await lim.acquire(key, 100, images=4)
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(key, 100, images=2, timeout=0.2)
    r = await lim.acquire(key, 100, images=1, timeout=0.2)
    assert r.images == 1
    await lim.release(r, counted=False)  # images come back too
    assert (await lim.snapshot(key)).images_level == 1
    with pytest.raises(RequestTooLargeError):
        await lim.acquire(key, 100, images=6)
    await lim.acquire(KEY, 100, images=50, timeout=0.2)  # a model without an images limit


async def test_keys_are_separate_per_model_and_account(redis_url: str) -> None:
    lim = make(redis_url, config(1000, 100), clock=Clock())
    await lim.acquire(KEY, 1000)
    other_account = LimitKey(MODEL, key_fingerprint("sk-other", None))
    await lim.acquire(other_account, 1000, timeout=0.2)
    await lim.acquire(LimitKey("gpt-4o", KEY.account), 1000, timeout=0.2)
    assert {k.account for k in await lim.known_keys()} == {KEY.account, other_account.account}
    assert len(await lim.status()) == 3


async def test_every_key_is_bounded_even_for_a_junk_model_name(redis_url: str) -> None:
    lim = make(redis_url, config(1000, 100))
    junk = LimitKey("x" * 100_000, KEY.account)
    r = await lim.acquire(junk, 10, timeout=1)
    await lim.settle(r, prompt_tokens=10, completion_tokens=0)
    queued = asyncio.create_task(lim.acquire(KEY, 1000))
    await lim.acquire(KEY, 10)
    await asyncio.sleep(0.1)
    sync = redis.Redis.from_url(redis_url)
    keys = sync.keys("*")
    assert keys and all(len(k) < 200 for k in keys)
    assert all(sync.pttl(k) > 0 for k in keys), [(k, sync.pttl(k)) for k in keys]
    assert all(len(m) < 200 for m in sync.zrange("imgq:lim:registry", 0, -1))
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)


class JumpClock(Clock):
    def __init__(self) -> None:
        super().__init__(live=True)


async def test_clock_jumping_back_neither_frees_nor_freezes(redis_url: str) -> None:
    clock = JumpClock()
    lim = make(redis_url, config(6000, 6000), clock=clock)  # 100 tokens/s
    await lim.acquire(KEY, 6000)
    clock.offset = -3600.0  # the clock goes back an hour
    with pytest.raises(CapacityWaitTimeoutError):
        await lim.acquire(KEY, 100, timeout=0.3)  # no capacity freed by the jump...
    t0 = time.monotonic()
    await lim.acquire(KEY, 100, timeout=3)  # ...and the refill goes on at its rate
    assert time.monotonic() - t0 < 1.2


async def test_clock_jumping_forward_refills_and_ends_the_cooldown(redis_url: str) -> None:
    clock = JumpClock()
    lim = make(redis_url, config(1000, 100), clock=clock)
    await lim.acquire(KEY, 1000)
    await lim.cooldown(KEY, 30)
    clock.offset = 120.0
    await lim.acquire(KEY, 1000, timeout=0.5)


async def test_default_time_is_redis_server_time(redis_url: str) -> None:
    lim = make(redis_url, config(1000, 100))
    r = await lim.acquire(KEY, 10)
    sec, usec = redis.Redis.from_url(redis_url).time()
    assert abs(sec * 1000 + usec // 1000 - r.granted_at_ms) < 1000


async def test_redis_down_raises_storage_unavailable() -> None:
    from shared.embedded_redis import free_port
    from shared.errors import StorageUnavailableError

    lim = make(f"redis://127.0.0.1:{free_port()}/0", config(1000, 10))
    with pytest.raises(StorageUnavailableError):
        await lim.acquire(KEY, 1)


def test_limiter_satisfies_protocol(redis_url: str) -> None:
    from shared.limiter import Limiter

    assert isinstance(RedisLimiter(redis.asyncio.Redis.from_url(redis_url), config(1, 1)), Limiter)


async def test_waiters_share_few_connections_and_do_not_block_the_loop(redis_url: str) -> None:
    lim = RedisLimiter(
        redis.asyncio.Redis.from_url(redis_url, client_name="waiters-test"), config(6000, 100_000)
    )
    await lim.acquire(KEY, 6000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    waiters: list[asyncio.Task[Reservation]] = [
        asyncio.create_task(lim.acquire(KEY, 1, timeout=10)) for _ in range(300)
    ]
    await asyncio.sleep(0.5)
    clients = [
        c for c in redis.Redis.from_url(redis_url).client_list() if c["name"] == "waiters-test"
    ]
    assert 1 <= len(clients) <= 5  # direct asks (4) + the pump: not one per waiter
    assert ticks >= 25  # the loop kept running while they wait
    done = await asyncio.gather(*waiters)  # 100 tokens/s: 300 in ~3 s
    assert len(done) == 300
    t.cancel()


async def test_waiters_survive_a_lost_queue(redis_url: str) -> None:
    lim = make(redis_url, config(6000, 600))
    await lim.acquire(KEY, 6000)
    waiting = asyncio.create_task(lim.acquire(KEY, 100, timeout=10))
    await asyncio.sleep(0.3)
    assert (await lim.snapshot(KEY)).waiting == 1
    redis.Redis.from_url(redis_url).flushall()  # e.g. Redis restarted without persistence
    got = await asyncio.wait_for(waiting, 3)  # queued again, and granted
    assert got.tokens == 100
