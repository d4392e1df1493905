"""Small helpers for the simulator tests: tiny images made with Pillow and raw HTTP calls."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from PIL import Image

KEY = "sk-test-0123456789"


def image_bytes(
    w: int = 32, h: int = 16, colour: tuple[int, int, int] = (250, 10, 10), fmt: str = "PNG"
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, fmt)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def chat_body(
    url: str,
    *,
    model: str = "gpt-4o",
    text: str = "What is in this image?",
    detail: str = "auto",
    **extra: Any,
) -> dict[str, Any]:
    content = [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": url, "detail": detail}},
    ]
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = self.body["error"]
        return err


def post(
    root: str,
    path: str,
    body: Any,
    *,
    key: str | None = KEY,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Reply:
    """POST JSON to the simulator; returns status, lower-cased headers and the decoded body."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(f"{root}{path}", data=data, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, rh, payload = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, rh, payload = exc.code, exc.headers, exc.read()
    text = payload.decode()
    try:
        decoded: Any = json.loads(text)
    except ValueError:
        decoded = text
    return Reply(status, {k.lower(): v for k, v in rh.items()}, decoded)
