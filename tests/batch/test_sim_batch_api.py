"""The simulator's Files and Batch APIs, driven through the official openai SDK over HTTP."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import openai
import pytest

from tests.batch.conftest import KEY, sim_batch
from tests.conftest import Sim
from tests.simulator.helpers import chat_body, data_url, image_bytes, sha16


def _client(sim: Sim) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=sim.base_url, max_retries=0)


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def _chat_lines(n: int, model: str = "gpt-4o") -> tuple[list[dict[str, Any]], dict[str, str]]:
    lines, hashes = [], {}
    for i in range(n):
        img = image_bytes(20 + i, 10, colour=(i * 40 % 256, 5, 200))
        hashes[f"job-{i}"] = sha16(img)
        body = chat_body(data_url(img), model=model, max_tokens=200)
        lines.append(
            {"custom_id": f"job-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
    return lines, hashes


def _wait(client: openai.OpenAI, batch_id: str, timeout: float = 20) -> Any:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != b.status:
            seen.append(b.status)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b, seen
        time.sleep(0.02)
    raise TimeoutError(seen)


def _read(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines() if x]


def _start(
    client: openai.OpenAI,
    lines: list[dict[str, Any]],
    endpoint: str = "/v1/chat/completions",
    **kw: Any,
) -> Any:
    """Upload ``lines`` as a batch input file and create a 24 h batch of them."""
    f = client.files.create(file=("in.jsonl", io.BytesIO(_jsonl(lines))), purpose="batch")
    return client.batches.create(
        input_file_id=f.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        **kw,
    )


def test_files_upload_retrieve_list_content_delete(bsim: Sim) -> None:
    client = _client(bsim)
    data = _jsonl(_chat_lines(2)[0])
    f = client.files.create(file=("imgq-x.jsonl", io.BytesIO(data)), purpose="batch")
    assert f.id.startswith("file-") and f.bytes == len(data) and f.purpose == "batch"
    assert f.filename == "imgq-x.jsonl" and f.status == "processed"
    assert client.files.retrieve(f.id).bytes == len(data)
    assert f.id in [x.id for x in client.files.list(purpose="batch")]
    assert client.files.content(f.id).content == data
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_failed_upload_fault_then_success(bsim: Sim) -> None:
    client = _client(bsim)
    before = sim_batch(bsim, fail_uploads=1)["uploads"]
    with pytest.raises(openai.InternalServerError):
        client.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    client.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    assert sim_batch(bsim)["uploads"] == before + 1


def test_batch_completes_with_each_line_answered_about_its_own_image(bsim: Sim) -> None:
    client = _client(bsim)
    lines, hashes = _chat_lines(6)
    b = _start(client, lines, metadata={"imgq_batch_id": "b1"})
    assert b.status == "validating" and b.metadata == {"imgq_batch_id": "b1"}
    done, seen = _wait(client, b.id)
    # Polling may miss a short state on a loaded machine; what was seen is in the API's order,
    # and the timestamps show every state was passed through.
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert seen[-1] == "completed" and seen == sorted(seen, key=order.index)
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.request_counts.total == 6 and done.request_counts.completed == 6
    assert done.error_file_id is None
    out = _read(client, done.output_file_id)
    assert sorted(x["custom_id"] for x in out) == sorted(hashes)
    online = client.chat.completions.create(**lines[0]["body"])
    for x in out:
        assert x["response"]["status_code"] == 200 and x["error"] is None
        body = x["response"]["body"]
        assert f"sha256={hashes[x['custom_id']]}" in body["choices"][0]["message"]["content"]
        if x["custom_id"] == "job-0":  # billed and answered exactly as online
            assert body["usage"]["prompt_tokens"] == online.usage.prompt_tokens
            assert body["choices"][0]["message"]["content"] == online.choices[0].message.content
    assert done.usage.input_tokens == sum(
        x["response"]["body"]["usage"]["prompt_tokens"] for x in out
    )
    assert b.id in [x.id for x in client.batches.list()]


def test_line_errors_go_to_the_error_file(bsim: Sim) -> None:
    client = _client(bsim)
    sim_batch(bsim, fail_lines={"job-1": 500})
    lines, _ = _chat_lines(3)
    lines[2]["body"]["messages"][0]["content"][1]["image_url"]["url"] = "data:image/png;base64,AAAA"
    b = _start(client, lines)
    done, _ = _wait(client, b.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    errs = {x["custom_id"]: x for x in _read(client, done.error_file_id)}
    assert errs["job-1"]["response"]["status_code"] == 500
    assert errs["job-2"]["response"]["status_code"] == 400
    assert errs["job-2"]["response"]["body"]["error"]["code"] == "invalid_image"
    assert [x["custom_id"] for x in _read(client, done.output_file_id)] == ["job-0"]


def test_expired_batch_delivers_half_and_marks_the_rest(bsim: Sim) -> None:
    client = _client(bsim)
    sim_batch(bsim, expire_next=1, concurrency=1)
    lines, _ = _chat_lines(4)
    b = _start(client, lines)
    done, _ = _wait(client, b.id)
    sim_batch(bsim, concurrency=16)
    assert done.status == "expired" and done.expired_at
    out, errs = _read(client, done.output_file_id), _read(client, done.error_file_id)
    assert len(out) == 2 and len(errs) == 2
    assert all(e["response"] is None and e["error"]["code"] == "batch_expired" for e in errs)
    assert {x["custom_id"] for x in out + errs} == {f"job-{i}" for i in range(4)}


def test_cancel_and_validation_failures(bsim: Sim) -> None:
    client = _client(bsim)
    sim_batch(bsim, progress_s=5)
    lines, _ = _chat_lines(2)
    b = _start(client, lines)
    assert client.batches.cancel(b.id).status == "cancelling"
    done, _ = _wait(client, b.id)
    assert done.status == "cancelled" and done.cancelled_at
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(b.id)
    # A line for another endpoint fails the whole batch at validation, with the line number.
    b2 = _start(client, [{**lines[0], "url": "/v1/responses"}])
    done2, seen = _wait(client, b2.id)
    assert seen == ["validating", "failed"]
    assert done2.errors.data[0].code == "mismatched_endpoint" and done2.errors.data[0].line == 1
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=b2.input_file_id, endpoint="/v1/chat/completions",
                              completion_window="1h")  # type: ignore[arg-type]  # fmt: skip


def test_enqueued_token_limit_fails_the_batch_with_openais_message(bsim: Sim) -> None:
    client = _client(bsim)
    sim_batch(bsim, enqueued_token_limit=100)
    lines, _ = _chat_lines(3)
    b = _start(client, lines)
    done, _ = _wait(client, b.id)
    assert done.status == "failed"
    err = done.errors.data[0]
    assert err.code == "token_limit_exceeded" and "Limit: 100 enqueued tokens" in err.message


def test_responses_endpoint_lines(bsim: Sim) -> None:
    client = _client(bsim)
    img = image_bytes(40, 30)
    body = {
        "model": "gpt-4.1-mini",
        "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is it?"},
            {"type": "input_image", "image_url": data_url(img), "detail": "low"},
        ]}],
        "max_output_tokens": 100,
    }  # fmt: skip
    line = {"custom_id": "r1", "method": "POST", "url": "/v1/responses", "body": body}
    b = _start(client, [line], "/v1/responses")
    done, _ = _wait(client, b.id)
    (out,) = _read(client, done.output_file_id)
    online = client.responses.create(**body)
    assert out["response"]["body"]["usage"]["input_tokens"] == online.usage.input_tokens
    assert f"sha256={sha16(img)}" in out["response"]["body"]["output"][0]["content"][0]["text"]


def test_batch_flag_sets_timing_and_faults_at_start() -> None:
    from tests.conftest import start_simulator, stop_simulator

    sim = start_simulator("--batch", '{"fail_uploads": 1, "progress_s": 0.01, "expire_next": 2}')
    try:
        settings = sim_batch(sim)["settings"]
        assert (settings["fail_uploads"], settings["progress_s"], settings["expire_next"]) == (
            1, 0.01, 2,
        )  # fmt: skip
        with pytest.raises(openai.InternalServerError):
            _client(sim).files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    finally:
        stop_simulator(sim)


def test_bad_batch_flag_is_a_usage_error() -> None:
    from click.testing import CliRunner

    from simulator.cli import sim

    for bad in ('{"nope": 1}', "not json", "[1]"):
        result = CliRunner().invoke(sim, ["--batch", bad])
        assert result.exit_code == 2, (bad, result.output)
