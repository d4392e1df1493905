"""The Python client: submit image jobs, read and wait for their results. Async and sync.

>>> from imgq import Client
>>> with Client(redis_url="redis://127.0.0.1:6379/0") as c:  # doctest: +SKIP
...     job_id = c.submit(["photo.jpg"], "What is in this image?")
...     print(c.wait(job_id, timeout=60).output_text)

Without a Redis URL (argument or ``IMGQ_REDIS_URL``) the client says what to set; it never
starts a server by itself:

>>> from shared.settings import Settings
>>> Client(Settings(redis_url=None))
Traceback (most recent call last):
...
shared.errors.ConfigurationError: no Redis configured: set IMGQ_REDIS_URL (e.g. redis://127.0.0.1:6379/0) or pass redis_url=...; only the `imgq` command line starts an embedded Redis by itself

This module is the client's one import path; the parts live in ``producer.submit_request``
(what a job asks for), ``producer.job_intake`` (checks and failed records),
``producer.async_client`` and ``producer.sync_client``.
"""

from __future__ import annotations

from producer.async_client import AsyncClient
from producer.submit_request import ImageInput, ImageLike, SubmitRequest, check_request_id
from producer.sync_client import Client

__all__ = ["AsyncClient", "Client", "ImageInput", "ImageLike", "SubmitRequest", "check_request_id"]
