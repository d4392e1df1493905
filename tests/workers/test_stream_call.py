"""Streaming calls (issue 11) through the worker's real client against the simulator, and the
delta publisher and hub against a real Redis.

A streamed call must give the same outcome as the non-streaming one (text, usage, headers), its
fragments joined must be that text, and a stream cut halfway must be the retryable error a
dropped non-streaming call is.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping

import openai
import pytest
import redis.asyncio as aioredis

from shared import errors
from shared.job_stream import Delta, DeltaPublisher, channel, decode
from shared.stream_hub import StreamHub
from tests.conftest import Sim, start_simulator, stop_simulator
from tests.workers.conftest import KEY
from tests.workers.test_call_openai import SCHEMA, as_part, client_for, png
from workers.openai_call import call_openai, parse_structured_output
from workers.stream_call import call_openai_stream


@pytest.fixture(scope="module")
def paced() -> Iterator[Sim]:
    """Chunks 2 ms apart, so the text really arrives over time."""
    sim = start_simulator("--api-key", KEY, "--latency-ms", "0", "--stream-chunk-ms", "2")
    yield sim
    stop_simulator(sim)


@pytest.fixture(scope="module")
def cutting() -> Iterator[Sim]:
    """Every streamed answer dropped halfway through."""
    sim = start_simulator("--api-key", KEY, "--latency-ms", "0", "--stream-cut-rate", "1")
    yield sim
    stop_simulator(sim)


@pytest.fixture
async def paced_client(paced: Sim) -> AsyncIterator[openai.AsyncOpenAI]:
    client = client_for(paced.base_url)
    yield client
    await client.close()


# Four images: an answer of eight lines, streamed in a few dozen chunks.
IMAGES = [as_part(png((40 + i, 30), c)) for i, c in enumerate(["red", "blue", "green", "white"])]


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_streamed_call_gives_the_non_streamed_outcome(
    paced_client: openai.AsyncOpenAI, api: str
) -> None:
    kw = dict(api=api, model="gpt-4.1-mini", prompt="What is it?", images=IMAGES,
              max_output_tokens=400, timeout=10)  # fmt: skip
    fragments: list[str] = []
    seen: list[Mapping[str, str]] = []

    async def on_headers(h: Mapping[str, str]) -> None:
        seen.append(h)

    streamed = await call_openai_stream(
        paced_client, **kw, on_headers=on_headers, on_delta=fragments.append
    )  # type: ignore[arg-type]
    plain = await call_openai(paced_client, **kw)  # type: ignore[arg-type]
    assert streamed.text == plain.text and "".join(fragments) == streamed.text
    assert len(fragments) > 10  # really streamed, not one block
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        plain.prompt_tokens,
        plain.completion_tokens,
    )
    assert streamed.completion_tokens > 0
    assert len(seen) == 1 and "x-ratelimit-remaining-tokens" in seen[0]
    assert streamed.headers["x-ratelimit-limit-tokens"] == plain.headers["x-ratelimit-limit-tokens"]


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_streamed_structured_answer_parses(
    paced_client: openai.AsyncOpenAI, api: str
) -> None:
    out = await call_openai_stream(
        paced_client, api=api, model="gpt-4.1-mini", prompt="Describe it.",
        images=[as_part(png((30, 60), "blue"))], max_output_tokens=200, json_schema=SCHEMA,
        timeout=10, on_delta=lambda _: None,
    )  # fmt: skip
    assert parse_structured_output(out.text, SCHEMA)["orientation"] == "portrait"


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_stream_cut_halfway_is_a_retryable_connection_error(cutting: Sim, api: str) -> None:
    client = client_for(cutting.base_url)
    fragments: list[str] = []
    try:
        with pytest.raises(errors.UpstreamConnectionError) as info:
            await call_openai_stream(
                client, api=api, model="gpt-4.1-mini", prompt="Hi", images=IMAGES,
                max_output_tokens=400, timeout=10, on_delta=fragments.append,
            )  # fmt: skip
    finally:
        await client.close()
    assert info.value.retryable and info.value.code == "connection_error"
    assert cutting.stats()["faults"]["stream_cut"] >= 1


async def test_an_error_answer_is_mapped_as_without_streaming(sims: dict[str, Sim]) -> None:
    client = client_for(sims["ok"].base_url, key="sk-not-the-right-one-xyz")
    try:
        with pytest.raises(errors.AuthenticationError):
            await call_openai_stream(
                client, api="chat", model="gpt-4.1-mini", prompt="Hi", images=IMAGES[:1],
                max_output_tokens=10, timeout=10, on_delta=lambda _: None,
            )  # fmt: skip
    finally:
        await client.close()


# -- publisher and hub on a real Redis ------------------------------------------------------------
async def _collect(r: aioredis.Redis, job_id: str, publish: object, chars: int) -> list[bytes]:
    """The messages on ``job_id``'s channel while ``publish`` runs, until ``chars`` arrived."""
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel(job_id))
    await publish  # type: ignore[misc]
    got: list[bytes] = []
    async with asyncio.timeout(20):
        while sum(len(d.text) for d in map(decode, got) if d) < chars:
            msg = await pubsub.get_message(timeout=0.5)
            if msg is not None:
                got.append(msg["data"])
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    return got


async def test_the_publisher_coalesces_a_fast_stream(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    tokens = [f"tok{i} " for i in range(2000)]  # ~12 KiB in one burst

    async def run() -> None:
        pub = DeltaPublisher(r, "job-1", attempt=1)
        for t in tokens:
            pub.add(t)
        await pub.close()

    try:
        got = await _collect(r, "job-1", run(), len("".join(tokens)))
    finally:
        await r.aclose()
    deltas = [d for d in map(decode, got) if d is not None]
    assert len(deltas) == len(got) and "".join(d.text for d in deltas) == "".join(tokens)
    assert deltas[0].offset == 0
    assert all(a.offset + len(a.text) == b.offset for a, b in itertools.pairwise(deltas))
    assert len(got) < 20, len(got)  # a burst goes out in few publishes, not one per token


async def test_a_publish_failure_never_raises(redis_url: str) -> None:
    r = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    pub = DeltaPublisher(r, "job-2", attempt=1)
    pub.add("hello")
    pub.add(" world")
    await pub.close()
    assert pub.published == 0 and pub.failed >= 1
    await r.aclose()


async def test_the_hub_relays_only_watched_jobs_over_one_connection(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    hub = StreamHub(r)
    a: asyncio.Queue[Delta] = asyncio.Queue()
    b: asyncio.Queue[Delta] = asyncio.Queue()
    try:
        async with hub.watch("t1~job", a), hub.watch("t1~job", b):
            assert hub.channels == 1 and hub.subscriptions == 1
            await r.publish(channel("t2~job"), b"1 0 not yours")
            await r.publish(channel("t1~job"), b"1 0 hello")
            assert await asyncio.wait_for(a.get(), 10) == Delta(1, 0, "hello")
            assert await asyncio.wait_for(b.get(), 10) == Delta(1, 0, "hello")
        assert hub.channels == 0
        async with hub.watch("t1~other", a):  # the same connection, another channel
            await r.publish(channel("t1~other"), b"2 0 again")
            assert await asyncio.wait_for(a.get(), 10) == Delta(2, 0, "again")
        assert hub.subscriptions == 1 and a.empty() and b.empty()
    finally:
        await hub.aclose()
        await r.aclose()
