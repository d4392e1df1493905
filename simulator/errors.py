"""OpenAI's error bodies, word for word where OpenAI's wording is known.

Every error the simulator answers is a :class:`ApiError`; the app turns it into
``{"error": {"message", "type", "param", "code"}}`` with the right status and headers.

>>> err = model_not_found("gpt-9")
>>> err.status, err.body()["error"]["code"]
(404, 'model_not_found')
"""

from __future__ import annotations

from typing import Any

RATE_LIMITS_URL = "https://platform.openai.com/account/rate-limits"
ORG = "org-simulator"
SUPPORTED_FORMATS = "['png', 'jpeg', 'gif', 'webp']"


class ApiError(Exception):
    """An HTTP error in OpenAI's shape; ``headers`` are added to the answer (e.g. retry-after)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    @property
    def stats_code(self) -> str:
        """The key counted in `/_sim/stats` ``codes``: the code, else the type."""
        return self.code or self.type

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def mask_key(key: str) -> str:
    """Show a key the way OpenAI's 401 does, so secrets never appear whole in answers or logs."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def missing_api_key() -> ApiError:
    return ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password "
        "field (with blank username) if you're accessing the API from your browser and are "
        "prompted for a username and password. You can obtain an API key from "
        "https://platform.openai.com/account/api-keys.",
    )


def invalid_api_key(key: str) -> ApiError:
    return ApiError(
        401,
        f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def invalid_json() -> ApiError:
    return ApiError(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
        "contact us through our help center at help.openai.com.)",
    )


def invalid_image(param: str | None = None) -> ApiError:
    return ApiError(
        400,
        "The image data you provided does not represent a valid image. Please check your input "
        f"and try again with one of the supported image formats: {SUPPORTED_FORMATS}.",
        code="invalid_image",
        param=param,
    )


def invalid_image_format(param: str | None = None, detail: str = "") -> ApiError:
    extra = f" ({detail})" if detail else ""
    return ApiError(
        400,
        "You uploaded an unsupported image. Please make sure your image is below 20 MB in size "
        f"and is of one the following formats: {SUPPORTED_FORMATS}.{extra}",
        code="invalid_image_format",
        param=param,
    )


def invalid_image_url(url: str, why: str, param: str | None = None) -> ApiError:
    shown = url if len(url) <= 200 else url[:200] + "..."
    return ApiError(400, f"{why} {shown}", code="invalid_image_url", param=param)


def rate_limited(
    model: str, kind: str, limit: int, used: int, requested: int, wait: str
) -> ApiError:
    """429 for an exhausted bucket; ``kind`` is "tokens" or "requests" (OpenAI's ``type``)."""
    unit = "tokens per min (TPM)" if kind == "tokens" else "requests per min (RPM)"
    return ApiError(
        429,
        f"Rate limit reached for {model} in organization {ORG} on {unit}: Limit {limit}, "
        f"Used {used}, Requested {requested}. Please try again in {wait}. "
        f"Visit {RATE_LIMITS_URL} to learn more.",
        type=kind,
        code="rate_limit_exceeded",
    )


def request_too_large(model: str, limit: int, requested: int) -> ApiError:
    """429 for a request that can never fit the TPM limit: retrying cannot help."""
    return ApiError(
        429,
        f"Request too large for {model} in organization {ORG} on tokens per min (TPM): "
        f"Limit {limit}, Requested {requested}. The input or output tokens must be reduced in "
        f"order to run successfully. Visit {RATE_LIMITS_URL} to learn more.",
        type="tokens",
        code="rate_limit_exceeded",
    )


def insufficient_quota() -> ApiError:
    return ApiError(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def server_error() -> ApiError:
    return ApiError(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )


def overloaded() -> ApiError:
    return ApiError(
        503,
        "The server is overloaded or not ready yet.",
        type="server_error",
    )
