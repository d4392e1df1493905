"""The Python client over the HTTP API (base URL + key), against the live stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgq import ApiError, HttpClient
from producer.http_client import job_body
from tests.api.conftest import ApiStack
from tests.pipeline.conftest import make_image


def test_the_http_client_submits_waits_lists_and_cancels(
    api_stack: ApiStack, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(make_image(80))
    with HttpClient(api_stack.url, api_key=api_stack.key("sdk")) as c:
        job_id = c.submit([photo], "Describe this image.", job_id="sdk-1")
        assert job_id == "sdk-1"
        done = c.wait(job_id, timeout=30)
        assert done.status == "succeeded" and done.output_text
        queued = c.submit([make_image(81)], "Later.", priority="bulk")
        assert c.cancel(queued).error.code == "cancelled"  # type: ignore[union-attr]
        jobs, _ = c.list(status="succeeded")
        assert [j.job_id for j in jobs] == ["sdk-1"]
        assert c.get("never-was") is None
        many = c.submit_many([job_body([make_image(82)], "One."), {"prompt": 3}])
        assert many[0].status == "queued"  # type: ignore[union-attr]
        assert isinstance(many[1], ApiError) and many[1].code == "invalid_job"
    with HttpClient(api_stack.url, api_key="imgq_wrong") as bad:
        with pytest.raises(ApiError) as info:
            bad.get("sdk-1")
        assert info.value.status == 401 and info.value.code == "unauthorized"
        assert info.value.request_id
