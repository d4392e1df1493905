"""The OpenAPI 3.1 document of the job API (``GET /openapi.json``) and a docs page (``/docs``).

The result schema is the ``Result`` model's own JSON Schema, so the document cannot drift from
what the routes return; the tests run schemathesis against the live server with it.

>>> spec = build_spec()
>>> spec["openapi"], sorted(spec["paths"])[:2]
('3.1.0', ['/healthz', '/readyz'])
"""

from __future__ import annotations

import html
from functools import cache
from typing import Any

from aiohttp import web

from producer.openapi_schemas import (
    BATCH_ITEM,
    BINARY,
    DELTA,
    EDIT,
    ERROR,
    ERROR_DETAIL,
    GENERATE,
    IMAGE,
    SSE_EVENT,
    SUBMIT,
)
from shared.jobs import Result


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _answer(desc: str, ref: str) -> dict[str, Any]:
    return {"description": desc, "content": _json(ref)}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {**responses, "default": _answer("an error (one shape)", "Error")},
        **extra,
    }


def _job_param() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _paths() -> dict[str, Any]:
    ok = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    probe = {"200": {"description": "ok", "content": {"application/json": {"schema": ok}}}}
    submit_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitJob"}}},
    }
    page = {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    batch_out = {"type": "object", "properties": {"jobs": {"type": "array", "items": BATCH_ITEM}}}
    batch_in = {
        "type": "object",
        "required": ["jobs"],
        "properties": {
            "jobs": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/SubmitJob"},
            }
        },
    }
    wait = {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0}}
    listing = [
        {
            "name": "status",
            "in": "query",
            "schema": {"enum": ["queued", "running", "succeeded", "failed"]},
        },
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
    ]
    public: dict[str, Any] = {"security": []}
    picture_answers = {
        "200": _answer("the job id was known: the job as it stands", "Result"),
        "202": _answer("accepted (or refused at submit: status failed)", "Result"),
    }
    return {
        "/healthz": {"get": _op("Liveness (Redis reachable); no key", probe, **public)},
        "/readyz": {"get": _op("Readiness; no key", probe, **public)},
        "/v1/jobs": {
            "post": _op(
                "Submit one job (JSON, or multipart/form-data with `image` files)",
                {
                    "200": _answer("the job id was known: the job as it stands", "Result"),
                    "202": _answer("accepted (or refused at submit: status failed)", "Result"),
                },
                requestBody=submit_body,
            ),
            "get": _op(
                "The caller's jobs, newest first",
                {
                    "200": {
                        "description": "a page",
                        "content": {"application/json": {"schema": page}},
                    }
                },
                parameters=listing,
            ),
        },
        "/v1/jobs/batch": {
            "post": _op(
                "Submit many jobs; one result per item, in order",
                {
                    "200": {
                        "description": "per item",
                        "content": {"application/json": {"schema": batch_out}},
                    }
                },
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": batch_in}},
                },
            )
        },
        "/v1/jobs/{job_id}": {
            "parameters": [_job_param()],
            "get": _op("A job's result", {"200": _answer("the job", "Result")}, parameters=[wait]),
            "delete": _op("Cancel a queued job", {"200": _answer("cancelled", "Result")}),
        },
        "/v1/jobs/{job_id}/events": {
            "parameters": [_job_param()],
            "get": _op(
                "Server-sent events: `status` with the job document at each change; for a job "
                "submitted with `stream`, `delta` events (schema Delta) with the output text as "
                "it comes, from the moment you connect; the stream ends after the final status",
                {
                    "200": {
                        "description": "an event stream",
                        "content": {"text/event-stream": {"schema": SSE_EVENT}},
                    }
                },
            ),
        },
        "/v1/images/generations": {
            "post": _op(
                "Submit an image generation job (the Images API; the pictures are the job's "
                "`images`, read them from /v1/jobs/{job_id}/images/{index})",
                picture_answers,
                requestBody={"required": True, "content": _json("GenerateJob")},
            )
        },
        "/v1/images/edits": {
            "post": _op(
                "Submit an image edit job (multipart/form-data: `image` files, an optional "
                "`mask`, and the fields)",
                picture_answers,
                requestBody={
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/EditJob"}}
                    },
                },
            )
        },
        "/v1/jobs/{job_id}/images/{index}": {
            "parameters": [
                _job_param(),
                {
                    "name": "index",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            "get": _op(
                "One picture of a finished generate or edit job, as stored",
                {
                    "200": {
                        "description": "the picture",
                        "content": {
                            f"image/{fmt}": {"schema": BINARY} for fmt in ("png", "jpeg", "webp")
                        },
                    }
                },
            ),
        },
    }


@cache
def build_spec() -> dict[str, Any]:
    result = Result.model_json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    defs = result.pop("$defs", {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "imgq",
            "version": "1",
            "description": "Image jobs -> OpenAI vision results. Every route but /healthz and "
            "/readyz needs `Authorization: Bearer <API key>` (`imgq keys create`).",
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **defs,
                "Result": result,
                "Error": ERROR,
                "ErrorDetail": ERROR_DETAIL,
                "Image": IMAGE,
                "SubmitJob": SUBMIT,
                "GenerateJob": GENERATE,
                "EditJob": EDIT,
                "Delta": DELTA,
            },
        },
    }


def docs_html(spec: dict[str, Any]) -> str:
    """A self-contained page (no scripts, no CDN): each operation and its answers."""
    rows = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            codes = ", ".join(c for c in op["responses"] if c != "default")
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(op['summary'])}</td><td>{codes}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>imgq API</title></head><body>"
        f"<h1>imgq API</h1><p>{html.escape(spec['info']['description'])}</p>"
        '<p>Errors: <code>{"error": {"code", "message", "request_id"}}</code>. '
        "The full document: <a href='/openapi.json'>/openapi.json</a>.</p>"
        "<table border='1' cellpadding='4'><tr><th>method</th><th>path</th><th>what</th>"
        f"<th>answers</th></tr>{''.join(rows)}</table></body></html>"
    )


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_spec())


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=docs_html(build_spec()), content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)


__all__ = ["add_routes", "build_spec", "docs_html"]
