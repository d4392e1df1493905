"""Auth, request and image validation: OpenAI's statuses, codes and error shape, over HTTP."""

from __future__ import annotations

import base64
import http.server
import io
import random
import threading
from collections.abc import Callable, Iterator

import pytest
from PIL import Image

from shared.embedded_redis import free_port
from tests.conftest import Sim
from tests.simulator.helpers import KEY, Reply, chat_body, data_url, image_bytes, post, sha16

CHAT = "/v1/chat/completions"
PNG = image_bytes(16, 16)


def _assert_error(
    reply: Reply, status: int, code: str | None, type_: str = "invalid_request_error"
) -> None:
    assert reply.status == status, reply.body
    assert set(reply.error) == {"message", "type", "param", "code"}
    assert reply.error["code"] == code
    assert reply.error["type"] == type_
    assert reply.error["message"]


# -- auth -----------------------------------------------------------------------------------------
def test_auth_required(sim: Sim) -> None:
    body = chat_body(data_url(PNG))
    _assert_error(post(sim.root, CHAT, body, key=None), 401, None)
    _assert_error(post(sim.root, CHAT, body, key=""), 401, None)
    basic = post(sim.root, CHAT, body, key=None, headers={"Authorization": "Basic abc"})
    _assert_error(basic, 401, None)
    assert "didn't provide an API key" in basic.error["message"]
    assert post(sim.root, CHAT, body, key="anything-non-empty").status == 200
    assert sim.stats()["requests"] == {"401": 3, "200": 1}


def test_specific_api_key(simulator_factory: Callable[..., Sim]) -> None:
    # The fixture polls /v1/models with "sk-test", so that is the one accepted key here.
    sim = simulator_factory("--latency-ms", "0", "--api-key", "sk-test")
    wrong = post(sim.root, CHAT, {"model": "gpt-4o", "messages": []}, key="sk-wrong-key-999999")
    _assert_error(wrong, 401, "invalid_api_key")
    assert "sk-wrong-key-999999" not in wrong.error["message"]  # never echo a secret whole
    assert "9999" in wrong.error["message"]
    ok = post(sim.root, CHAT, chat_body(data_url(PNG)), key="sk-test")
    assert ok.status == 200


# -- request shape --------------------------------------------------------------------------------
def test_bad_requests(sim: Sim) -> None:
    _assert_error(post(sim.root, CHAT, None, raw=b"{not json"), 400, None)
    _assert_error(post(sim.root, CHAT, {"messages": [{"role": "user", "content": "x"}]}), 400, None)
    _assert_error(post(sim.root, CHAT, {"model": "gpt-4o", "messages": []}), 400, "empty_array")
    bad_detail = post(sim.root, CHAT, chat_body(data_url(PNG), detail="ultra"))
    _assert_error(bad_detail, 400, "invalid_value")
    assert bad_detail.error["param"] == "messages[0].content[1].image_url.detail"
    bad_max = post(sim.root, CHAT, chat_body(data_url(PNG), max_tokens=0))
    _assert_error(bad_max, 400, "integer_below_min_value")
    unknown = post(sim.root, "/v1/responses", {"model": "gpt-99", "input": "hi"})
    _assert_error(unknown, 404, "model_not_found")
    assert (
        unknown.error["message"]
        == "The model `gpt-99` does not exist or you do not have access to it."
    )


# -- images ---------------------------------------------------------------------------------------
def _frames_gif(animated: bool) -> bytes:
    colours = [(255, 0, 0), (0, 0, 255)][: 2 if animated else 1]
    frames = [Image.new("RGB", (8, 8), c) for c in colours]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=animated, append_images=frames[1:], duration=50)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_supported_formats(sim: Sim, fmt: str, mime: str) -> None:
    data = image_bytes(30, 20, (20, 200, 20), fmt)
    reply = post(sim.root, CHAT, chat_body(data_url(data, mime)))
    assert reply.status == 200, reply.body
    text = reply.body["choices"][0]["message"]["content"]
    assert text.startswith(f"IMAGE sha256={sha16(data)} size=30x20 tokens=255\n")
    assert f"landscape {fmt} image, mostly green" in text


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (_frames_gif(animated=True), "invalid_image_format"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>',
            "invalid_image_format",
        ),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "invalid_image_format"),
        (image_bytes(8, 8, fmt="BMP"), "invalid_image_format"),
        (image_bytes(8, 8, fmt="TIFF"), "invalid_image_format"),
        (b"this is not an image at all", "invalid_image"),
        (image_bytes(64, 64)[:60], "invalid_image"),  # truncated PNG
        (b"", "invalid_image"),
    ],
    ids=["animated-gif", "svg-xml", "svg", "bmp", "tiff", "garbage", "truncated", "empty"],
)
def test_refused_images(sim: Sim, data: bytes, code: str) -> None:
    reply = post(sim.root, CHAT, chat_body(data_url(data)))
    _assert_error(reply, 400, code)
    assert reply.error["param"] == "messages[0].content[1]"
    assert sim.stats()["codes"] == {code: 1}


def test_still_gif_accepted(sim: Sim) -> None:
    assert post(sim.root, CHAT, chat_body(data_url(_frames_gif(False), "image/gif"))).status == 200


def test_bad_data_urls(sim: Sim) -> None:
    not_b64 = "data:image/png;base64," + "!!!" + base64.b64encode(PNG).decode()
    _assert_error(post(sim.root, CHAT, chat_body(not_b64)), 400, "invalid_image")
    no_b64_marker = "data:image/png," + base64.b64encode(PNG).decode()
    _assert_error(post(sim.root, CHAT, chat_body(no_b64_marker)), 400, "invalid_image")


@pytest.fixture
def image_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback HTTP server serving the bytes put in the returned dict by path."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = files.get(self.path)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", files
    server.shutdown()
    server.server_close()


def test_image_urls(sim: Sim, image_server: tuple[str, dict[str, bytes]]) -> None:
    base, files = image_server
    files["/cat.jpg"] = image_bytes(50, 70, (240, 240, 240), "JPEG")
    ok = post(sim.root, CHAT, chat_body(f"{base}/cat.jpg"))
    assert ok.status == 200, ok.body
    assert ok.body["choices"][0]["message"]["content"].startswith(
        f"IMAGE sha256={sha16(files['/cat.jpg'])} size=50x70 "
    )
    localhost = base.replace("127.0.0.1", "localhost")
    assert post(sim.root, CHAT, chat_body(f"{localhost}/cat.jpg")).status == 200
    _assert_error(post(sim.root, CHAT, chat_body(f"{base}/missing.png")), 400, "invalid_image_url")
    for url in (
        "https://example.com/cat.png",
        "http://10.0.0.1/cat.png",
        "http://169.254.169.254/latest/meta-data",
        "ftp://127.0.0.1/cat.png",
        "file:///etc/passwd",
    ):
        _assert_error(post(sim.root, CHAT, chat_body(url)), 400, "invalid_image_url")


def test_size_caps_configurable(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory(
        "--latency-ms",
        "0",
        "--max-image-mb",
        "0.01",
        "--max-request-image-mb",
        "0.02",
        "--max-images",
        "3",
    )
    noise = Image.frombytes("L", (120, 120), random.Random(0).randbytes(120 * 120))
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    big = buf.getvalue()
    assert 10_486 < len(big) < 20_000
    _assert_error(post(sim.root, CHAT, chat_body(data_url(big))), 400, "invalid_image_format")
    small = image_bytes(90, 90, (1, 2, 3))
    content = [{"type": "image_url", "image_url": {"url": data_url(small)}}] * 4
    too_many = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    _assert_error(post(sim.root, CHAT, too_many), 400, "too_many_images")
    medium = Image.frombytes("L", (100, 90), random.Random(1).randbytes(9000))
    buf = io.BytesIO()
    medium.save(buf, "PNG")
    assert 7_000 < len(buf.getvalue()) < 10_486
    content = [{"type": "image_url", "image_url": {"url": data_url(buf.getvalue())}}] * 3
    heavy = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    _assert_error(post(sim.root, CHAT, heavy), 400, "images_too_large")


def test_default_20mb_cap(sim: Sim) -> None:
    over = data_url(b"\x89PNG\r\n\x1a\n" + bytes(20 * 1024 * 1024 + 10))
    reply = post(sim.root, CHAT, chat_body(over))
    _assert_error(reply, 400, "invalid_image_format")
    assert "20 MB" in reply.error["message"]


def test_key_never_in_stats_or_answers(sim: Sim) -> None:
    reply = post(sim.root, CHAT, chat_body(data_url(PNG)))
    assert KEY not in str(reply.body) and KEY not in str(reply.headers)
    assert KEY not in str(sim.stats())


def test_body_over_the_request_cap_is_a_json_413(simulator_factory: Callable[..., Sim]) -> None:
    sim = simulator_factory("--latency-ms", "0", "--max-request-image-mb", "0.01")
    huge = chat_body(data_url(bytes(9 * 1024 * 1024)))
    reply = post(sim.root, CHAT, huge)
    _assert_error(reply, 413, None)
