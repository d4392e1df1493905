"""The decode budget (a byte semaphore shared by a worker's jobs) and pricing a decode by header."""

from __future__ import annotations

import asyncio
import resource
import time

import pytest

from benchmarks.resources import real_png_bomb
from shared.errors import ImageTooLargeError
from shared.images.budget import ByteBudget
from shared.images.prepare import DEFAULT_MAX_DECODE_BYTES, finish_image, plan_image, prepare_image
from tests.images import samples as s


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return real_png_bomb()


def test_png_bomb_is_refused_from_its_header_without_decoding(bomb: bytes) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    with pytest.raises(ImageTooLargeError) as err:
        prepare_image(bomb, model="gpt-4o", detail="high")
    cpu = time.process_time() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "10950x10950" in err.value.message and "decode limit" in err.value.message
    # Decoding it would take ~480 MB and ~1.4 s of CPU; pricing the header takes neither.
    assert grown_mib < 100, grown_mib
    assert cpu < 0.5, cpu


def test_plan_prices_png_by_pixels_and_jpeg_at_its_dct_scale() -> None:
    png = s.encode(s.photo((2000, 1500)), "PNG")
    plan = plan_image(png, model="gpt-4o", detail="high")
    assert plan.decode_bytes == 2000 * 1500 * 8  # RGB kept as 4 bytes a pixel, plus one copy
    jpeg = s.encode(s.photo((4000, 3000)), "JPEG", quality=80)
    plan = plan_image(jpeg, model="gpt-4o", detail="high")
    assert plan.decode_bytes == 2000 * 1500 * 8  # decoded at 1/2 scale for a 1024x768 target
    assert plan.original_size == (4000, 3000)
    done = finish_image(plan)
    assert (done.width, done.height, done.original_width) == (1024, 768, 4000)


def test_a_smaller_decode_limit_refuses_what_the_default_takes() -> None:
    png = s.encode(s.photo((2000, 1500)), "PNG")
    assert plan_image(png, model="gpt-4o", detail="high").decode_bytes < DEFAULT_MAX_DECODE_BYTES
    with pytest.raises(ImageTooLargeError, match="decode limit"):
        plan_image(png, model="gpt-4o", detail="high", max_decode_bytes=10 * 2**20)


async def test_budget_bounds_what_is_held_at_once() -> None:
    budget = ByteBudget(100)
    held = peak = 0

    async def use(n: int) -> None:
        nonlocal held, peak
        async with budget.reserve(n):
            held += n
            peak = max(peak, held)
            await asyncio.sleep(0.01)
            held -= n

    await asyncio.gather(*(use(n) for n in [60, 30, 50, 40, 100, 10, 70] * 5))
    assert peak <= 100
    assert budget.available == 100 and budget.waiting == 0


async def test_budget_is_first_come_first_served() -> None:
    budget = ByteBudget(100)
    order: list[int] = []
    await budget.acquire(80)

    async def take(n: int) -> None:
        async with budget.reserve(n):
            order.append(n)

    big = asyncio.create_task(take(90))
    await asyncio.sleep(0)
    small = asyncio.create_task(take(10))  # fits now, but the big one asked first
    await asyncio.sleep(0.01)
    assert order == []
    budget.release(80)
    await asyncio.gather(big, small)
    assert order == [90, 10]


async def test_budget_refuses_more_than_its_capacity_at_once() -> None:
    budget = ByteBudget(100)
    with pytest.raises(ImageTooLargeError, match="decode budget"):
        await budget.acquire(101)
    assert budget.available == 100


async def test_cancelled_waiter_gives_way_and_leaks_nothing() -> None:
    budget = ByteBudget(100)
    await budget.acquire(50)
    blocked = asyncio.create_task(budget.acquire(80))
    await asyncio.sleep(0)
    behind = asyncio.create_task(budget.acquire(40))  # queued behind the 80
    await asyncio.sleep(0)
    assert not behind.done()
    blocked.cancel()
    await asyncio.wait_for(behind, 1)  # the head left: the 40 that fits is served
    budget.release(40)
    budget.release(50)
    assert budget.available == 100
