"""imgq: image jobs -> OpenAI vision results, at fleet-wide TPM/RPM limits.

The public face: import from here, never from ``producer.*`` or ``shared.*``.

>>> import imgq
>>> issubclass(imgq.RateLimitedError, imgq.RetryableError)
True
>>> imgq.InvalidImageError("empty file").code
'invalid_image'
>>> with imgq.Client(redis_url="redis://127.0.0.1:6379/0") as client:  # doctest: +SKIP
...     job_id = client.submit(["photo.jpg"], "What is in this image?")
...     print(client.wait(job_id, timeout=60).output_text)

The client and models load on first use, so ``import imgq`` (and ``imgq --help``) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shared import errors as _errors
from shared.errors import *  # noqa: F403 - the whole error tree is public (and light)

if TYPE_CHECKING:
    from producer.client import AsyncClient, Client, ImageInput, SubmitRequest
    from producer.http_client import (
        ApiError,
        AsyncHttpClient,
        DeltaEvent,
        HttpClient,
        StatusEvent,
    )
    from shared.jobs import ErrorInfo, Result, Usage
    from shared.settings import Settings

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncHttpClient",
    "Client",
    "DeltaEvent",
    "ErrorInfo",
    "HttpClient",
    "ImageInput",
    "Result",
    "Settings",
    "StatusEvent",
    "SubmitRequest",
    "Usage",
]
__all__ += _errors.__all__

_LAZY = {
    "AsyncClient": "producer.client",
    "Client": "producer.client",
    "ImageInput": "producer.client",
    "SubmitRequest": "producer.client",
    "HttpClient": "producer.http_client",  # the HTTP API with an API key (issue 11)
    "AsyncHttpClient": "producer.http_client",
    "ApiError": "producer.http_client",
    "StatusEvent": "producer.http_client",  # what HttpClient.events yields
    "DeltaEvent": "producer.http_client",
    "ErrorInfo": "shared.jobs",
    "Result": "shared.jobs",
    "Usage": "shared.jobs",
    "Settings": "shared.settings",
}


def __getattr__(name: str) -> Any:
    # PEP 562: load the module that defines `name` on first use, then cache it here.
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module 'imgq' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
