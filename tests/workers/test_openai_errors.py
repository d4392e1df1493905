"""map_status_error on real SDK errors: from the simulator over HTTP where it can produce them,
else built by the SDK's own code from an `httpx2.Response` (403, 408, 409, proxies' 502)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from PIL import Image

from shared import errors
from tests.conftest import Sim
from tests.workers.conftest import KEY
from workers.openai_call import map_status_error
from workers.retry import retry_delay


def png(size: tuple[int, int] = (32, 32), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "blue").save(buf, fmt)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def chat(sim: Sim, *, key: str = KEY, model: str = "gpt-4.1-mini", image: str | None = None,
         max_tokens: int = 10) -> Any:  # fmt: skip
    client = openai.OpenAI(base_url=sim.base_url, api_key=key, max_retries=0, timeout=10)
    content: list[dict[str, Any]] = [{"type": "text", "text": "What is it?"}]
    content.append({"type": "image_url", "image_url": {"url": image or data_url(png())}})
    try:
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}],  # type: ignore[misc,list-item]
            max_completion_tokens=max_tokens,
        )  # fmt: skip
    finally:
        client.close()


def status_error(call: Callable[[], Any]) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return info.value


def built(status: int, body: Any, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    """An APIStatusError made by the SDK's own code from a real httpx2 response."""
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    if isinstance(body, str):
        response = httpx2.Response(status, text=body, headers=headers, request=request)
    else:
        response = httpx2.Response(status, json=body, headers=headers, request=request)
    client = openai.OpenAI(api_key="sk-x", max_retries=0)
    try:
        return client._make_status_error_from_response(response)
    finally:
        client.close()


def openai_body(message: str, code: str | None, type_: str = "invalid_request_error") -> Any:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


# -- from the simulator ---------------------------------------------------------------------------
def test_the_simulator_answers(sims: dict[str, Sim]) -> None:
    out = chat(sims["ok"])
    assert "IMAGE sha256=" in out.choices[0].message.content


@pytest.mark.parametrize(
    ("image", "code"),
    [
        (data_url(b"definitely not an image"), "invalid_image"),
        (data_url(png(fmt="BMP"), "image/bmp"), "invalid_image_format"),
        ("https://example.com/cat.png", "invalid_image_url"),
    ],
)
def test_400_image_errors(sims: dict[str, Sim], image: str, code: str) -> None:
    exc = status_error(lambda: chat(sims["ok"], image=image))
    assert exc.status_code == 400
    err = map_status_error(exc)
    assert isinstance(err, errors.InvalidImageError)
    assert err.code == code  # the API's own code is kept
    assert not err.retryable and retry_delay(err, 1) is None
    assert "Error code" not in err.message  # the API's message, not the SDK's wrapper


def test_400_other_is_bad_request_with_the_api_code(sims: dict[str, Sim]) -> None:
    exc = status_error(lambda: chat(sims["ok"], max_tokens=0))
    assert exc.status_code == 400
    err = map_status_error(exc)
    assert type(err) is errors.BadRequestError
    assert not err.retryable
    assert err.message.startswith("HTTP 400: ")


def test_401_never_leaks_the_key(sims: dict[str, Sim]) -> None:
    wrong = "sk-wrong-key-abcdefghijklmnop"
    exc = status_error(lambda: chat(sims["ok"], key=wrong))
    assert exc.status_code == 401
    err = map_status_error(exc)
    assert isinstance(err, errors.AuthenticationError)
    assert (err.code, err.retryable) == ("authentication_error", False)
    assert wrong not in err.message and KEY not in err.message


def test_404_unknown_model(sims: dict[str, Sim]) -> None:
    exc = status_error(lambda: chat(sims["ok"], model="gpt-9-imaginary"))
    assert exc.status_code == 404
    err = map_status_error(exc)
    assert isinstance(err, errors.NotFoundError)
    assert err.code == "model_not_found" and "gpt-9-imaginary" in err.message


def test_429_rate_limit_with_retry_after_ms(sims: dict[str, Sim]) -> None:
    chat(sims["tight"], model="gpt-4.1-nano")  # the one request this minute
    exc = status_error(lambda: chat(sims["tight"], model="gpt-4.1-nano"))
    assert exc.status_code == 429
    ms = float(exc.response.headers["retry-after-ms"])
    err = map_status_error(exc)
    assert isinstance(err, errors.RateLimitedError)
    assert err.retryable and err.code == "rate_limited"
    assert err.retry_after == pytest.approx(ms / 1000)  # the ms header wins over whole seconds
    assert 0 < err.retry_after <= 60
    delay = retry_delay(err, 1)
    assert delay is not None and err.retry_after <= delay <= err.retry_after + 0.25


def test_429_request_too_large_is_permanent(sims: dict[str, Sim]) -> None:
    exc = status_error(lambda: chat(sims["tight"], model="gpt-4o", max_tokens=5000))
    assert exc.status_code == 429
    err = map_status_error(exc)
    assert isinstance(err, errors.RequestTooLargeError)
    assert not err.retryable and retry_delay(err, 1) is None


def test_429_insufficient_quota_is_permanent(sims: dict[str, Sim]) -> None:
    exc = status_error(lambda: chat(sims["quota"]))
    assert exc.status_code == 429
    err = map_status_error(exc)
    assert isinstance(err, errors.InsufficientQuotaError)
    assert not err.retryable and retry_delay(err, 1) is None


def test_500_and_503_are_retryable(sims: dict[str, Sim]) -> None:
    seen: set[int] = set()
    for _ in range(30):
        exc = status_error(lambda: chat(sims["fail"]))
        seen.add(exc.status_code)
        err = map_status_error(exc)
        assert isinstance(err, errors.UpstreamServerError)
        assert err.retryable and err.message.startswith(f"HTTP {exc.status_code}: ")
        if seen == {500, 503}:
            break
    assert seen == {500, 503}


# -- built by the SDK from an httpx2 response -----------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "kind", "code", "retryable"),
    [
        (403, openai_body("Country, region, or territory not supported", "unsupported_country_region_territory", "request_forbidden"),
         errors.PermissionDeniedError, "permission_denied", False),
        (408, openai_body("Request timed out.", None), errors.UpstreamTimeoutError, "timeout", True),
        (409, openai_body("Conflict", None), errors.UpstreamServerError, "api_error", True),
        (502, "<html><body>Bad gateway</body></html>", errors.UpstreamServerError, "api_error", True),
        (500, {"error": "plain string error"}, errors.UpstreamServerError, "api_error", True),
        (400, openai_body("Invalid image.", "image_parse_error"), errors.InvalidImageError, "image_parse_error", False),
        (400, openai_body("maximum context length", "context_length_exceeded"), errors.BadRequestError, "context_length_exceeded", False),
        (422, {"detail": "unprocessable"}, errors.BadRequestError, "bad_request", False),
        (429, openai_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
         errors.InsufficientQuotaError, "insufficient_quota", False),
    ],
)  # fmt: skip
def test_built_errors(
    status: int, body: Any, kind: type[errors.ImgqError], code: str, retryable: bool
) -> None:
    err = map_status_error(built(status, body))
    assert type(err) is kind
    assert (err.code, err.retryable) == (code, retryable)


def test_built_429_retry_after_headers() -> None:
    body = openai_body("Rate limit reached ... Please try again in 1.5s.", "rate_limit_exceeded")
    only_s = map_status_error(built(429, body, {"retry-after": "2"}))
    assert isinstance(only_s, errors.RateLimitedError) and only_s.retry_after == 2.0
    both = map_status_error(built(429, body, {"retry-after": "2", "retry-after-ms": "1500"}))
    assert isinstance(both, errors.RateLimitedError) and both.retry_after == 1.5
    http_date = map_status_error(built(429, body, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert isinstance(http_date, errors.RateLimitedError) and http_date.retry_after is None
    none = map_status_error(built(429, body))
    assert isinstance(none, errors.RateLimitedError) and none.retry_after is None
