"""Run one simulated batch: validate its file, answer each line, write the result files.

``validating -> in_progress -> finalizing -> completed`` (or ``failed`` at validation,
``expired`` after half its lines, ``cancelling -> cancelled``). Each line is answered as the
online endpoint answers it (simulator/batch_lines.py); 200 answers go to the output file, the
others to the error file, one JSON line each: ``{id, custom_id, response: {status_code,
request_id, body}, error}``; lines an expired batch never reached get ``error.code
batch_expired``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any

from aiohttp import web

from simulator import errors
from simulator.batch_lines import LineAnswer, answer_line, line_prompt_tokens, url_api
from simulator.batch_state import (
    ACTIVE,
    BATCHES,
    MAX_REQUESTS_PER_FILE,
    BatchState,
    SimBatch,
    now_s,
)
from simulator.files_api import FILES, FileStore
from simulator.render import responses_usage
from simulator.state import STATE, SimState


def _fail(batch: SimBatch, code: str, message: str, line: int | None = None) -> None:
    batch.obj["status"] = "failed"
    batch.obj["failed_at"] = now_s()
    batch.obj["errors"] = {
        "object": "list",
        "data": [{"code": code, "message": message, "param": None, "line": line}],
    }


def _parse_input(data: bytes, endpoint: str) -> list[dict[str, Any]] | tuple[str, str, int]:
    """The input lines, or (code, message, line number) for the first invalid one."""
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    for n, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            return ("invalid_json_line", "This line is not parseable as valid JSON.", n)
        if not isinstance(line, dict) or not isinstance(line.get("body"), dict):
            return ("invalid_request", "Each line must be an object with a 'body' object.", n)
        cid = line.get("custom_id")
        if not isinstance(cid, str) or not cid:
            return ("missing_required_parameter", "Missing required parameter: 'custom_id'.", n)
        if cid in seen:
            return ("duplicate_custom_id", f"The custom_id '{cid}' is not unique.", n)
        seen.add(cid)
        if line.get("method") != "POST":
            return ("invalid_method", "The only supported method is 'POST'.", n)
        if line.get("url") != endpoint:
            return (
                "mismatched_endpoint",
                f"The url '{line.get('url')}' does not match the batch endpoint '{endpoint}'.",
                n,
            )
        models.add(str(line["body"].get("model")))
        if len(models) > 1:
            return ("mismatched_model", "All requests in a batch must use the same model.", n)
        lines.append(line)
    if not lines:
        return ("empty_file", "The input file has no requests.", 0)
    if len(lines) > MAX_REQUESTS_PER_FILE:
        return (
            "too_many_requests",
            f"The input file has {len(lines)} requests; the limit is {MAX_REQUESTS_PER_FILE}.",
            0,
        )
    return lines


def _enqueued_limit_message(model: str, limit: int) -> str:
    # OpenAI's wording; clients learn the limit from it.
    return (
        f"Enqueued token limit reached for {model} in organization {errors.ORG}. "
        f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress batches "
        "have been completed."
    )


def _result_line(cid: str, rid: str, ans: LineAnswer) -> dict[str, Any]:
    return {
        "id": f"batch_req_{os.urandom(12).hex()}",
        "custom_id": cid,
        "response": {"status_code": ans.status, "request_id": rid, "body": ans.body},
        "error": None,
    }


def _expired_line(cid: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{os.urandom(12).hex()}",
        "custom_id": cid,
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    }


async def _run(app: web.Application, batch: SimBatch) -> None:
    sim: SimState = app[STATE]
    bs: BatchState = app[BATCHES]
    files: FileStore = app[FILES]
    cfg = bs.settings
    obj = batch.obj
    started = time.monotonic()
    parsed = _parse_input(files.get(obj["input_file_id"]).data, obj["endpoint"])
    api = url_api(obj["endpoint"])
    await asyncio.sleep(cfg.validate_s)
    if isinstance(parsed, tuple):
        _fail(batch, parsed[0], parsed[1], parsed[2] or None)
        return
    if api is None:
        _fail(batch, "invalid_endpoint", f"The simulator does not answer {obj['endpoint']}.")
        return
    model = str(parsed[0]["body"].get("model"))
    obj["model"] = model
    obj["request_counts"]["total"] = len(parsed)
    load = bs.load_images
    assert load is not None, "add_routes(app, load_images) was not called"
    batch.tokens = sum([await line_prompt_tokens(sim, load, api, ln["body"]) for ln in parsed])
    if cfg.enqueued_token_limit is not None:
        enqueued = sum(
            b.tokens
            for b in bs.batches.values()
            if b is not batch and b.obj["status"] in ACTIVE and b.obj.get("model") == model
        )
        if enqueued + batch.tokens > cfg.enqueued_token_limit:
            batch.tokens = 0
            _fail(
                batch,
                "token_limit_exceeded",
                _enqueued_limit_message(model, cfg.enqueued_token_limit),
            )
            return
    if batch.cancel.is_set():
        return await _finish(app, batch, [], [], [])
    obj["status"] = "in_progress"
    obj["in_progress_at"] = now_s()
    expire = cfg.expire_next > 0
    if expire:
        cfg.expire_next -= 1
    stop_after = len(parsed) // 2 if expire else len(parsed)
    out: list[dict[str, Any]] = []
    err: list[dict[str, Any]] = []
    todo = {line["custom_id"]: line for line in parsed}  # not answered yet
    sem = asyncio.Semaphore(max(1, cfg.concurrency))

    async def one(line: dict[str, Any]) -> None:
        async with sem:
            if cfg.line_delay_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(batch.cancel.wait(), cfg.line_delay_s)
            if batch.cancel.is_set() or len(out) + len(err) >= stop_after:
                return
            rid = f"req_{sim.next_id()}"
            roll = bs.rng.random()
            forced = cfg.fail_lines.get(line["custom_id"])
            if forced is not None or roll < cfg.line_fail_rate:
                ans = _forced_error(forced or 500, line["body"])
            else:
                ans = await answer_line(sim, load, api, line["body"], sim.next_id())
            del todo[line["custom_id"]]
            record = _result_line(line["custom_id"], rid, ans)
            if ans.status == 200:
                out.append(record)
                obj["request_counts"]["completed"] += 1
                bs.lines_answered += 1
                bs.prompt_tokens += ans.prompt_tokens
                bs.completion_tokens += ans.completion_tokens
                for h in ans.image_hashes:
                    bs.images_seen[h] = bs.images_seen.get(h, 0) + 1
            else:
                err.append(record)
                obj["request_counts"]["failed"] += 1

    await asyncio.gather(*(one(line) for line in parsed))
    rest = max(0.0, cfg.progress_s - (time.monotonic() - started - cfg.validate_s))
    if rest and not batch.cancel.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(batch.cancel.wait(), rest)
    await _finish(app, batch, out, err, list(todo.values()), expired=expire)


async def _finish(
    app: web.Application,
    batch: SimBatch,
    out: list[dict[str, Any]],
    err: list[dict[str, Any]],
    todo: list[dict[str, Any]],
    *,
    expired: bool = False,
) -> None:
    obj, cfg, files = batch.obj, app[BATCHES].settings, app[FILES]
    cancelled = batch.cancel.is_set()
    if not cancelled:
        obj["status"] = "finalizing"
        obj["finalizing_at"] = now_s()
        await asyncio.sleep(cfg.finalize_s)
    if expired and not cancelled:
        err.extend(_expired_line(line["custom_id"]) for line in todo)
    if out:
        data = "".join(json.dumps(r) + "\n" for r in out).encode()
        obj["output_file_id"] = files.add(data, "batch_output.jsonl", "batch_output").id
    if err:
        data = "".join(json.dumps(r) + "\n" for r in err).encode()
        obj["error_file_id"] = files.add(data, "batch_error.jsonl", "batch_output").id
    n_in = sum(_usage(r, "prompt_tokens", "input_tokens") for r in out)
    n_out = sum(_usage(r, "completion_tokens", "output_tokens") for r in out)
    obj["usage"] = responses_usage(n_in, n_out)
    batch.tokens = 0
    if cancelled:
        obj["status"], obj["cancelled_at"] = "cancelled", now_s()
    elif expired:
        obj["status"], obj["expired_at"] = "expired", now_s()
    else:
        obj["status"], obj["completed_at"] = "completed", now_s()


def _usage(record: dict[str, Any], chat_name: str, responses_name: str) -> int:
    usage = record["response"]["body"].get("usage") or {}
    return int(usage.get(chat_name, usage.get(responses_name, 0)))


def _forced_error(status: int, body: dict[str, Any]) -> LineAnswer:
    if status == 400:
        return LineAnswer(400, errors.invalid_image().body())
    if status == 404:
        return LineAnswer(404, errors.model_not_found(str(body.get("model"))).body())
    return LineAnswer(500, errors.server_error().body())


def spawn(app: web.Application, batch: SimBatch) -> None:
    bs = app[BATCHES]
    task = asyncio.get_running_loop().create_task(_run(app, batch))
    bs.tasks.add(task)
    task.add_done_callback(bs.tasks.discard)
