"""`SubmitRequest.job_id` through the Python client: the HTTP API's rule (1-128 characters of
A-Z, a-z, 0-9, '.', '_', ':', '-'), refused at submit with InvalidJobError, nothing stored.

Before, a 300-character id left a failed record under a 300-character key, and an id with
control characters or `~` was queued and run; `acme~x` then read, through the API, as tenant
acme's job `x`.
"""

from __future__ import annotations

import pytest
import redis

from imgq import Client, InvalidJobError, SubmitRequest
from shared.settings import Settings
from tests.pipeline.conftest import make_image
from tests.producer.conftest import Stack

PROMPT = "Describe this image."
BAD = ["x" * 300, "x" * 129, "", "a\nb", "nul\x00", "tab\tid", "acme~order-7", "a b", "é", "a/b"]


@pytest.mark.parametrize("job_id", BAD)
def test_a_bad_job_id_raises_before_anything_is_stored(stack: Stack, job_id: str) -> None:
    url = stack.idle_redis_url()  # an empty database: whatever is stored shows
    with Client(Settings(redis_url=url)) as c:
        with pytest.raises(InvalidJobError) as info:
            c.submit([make_image(441)], PROMPT, job_id=job_id)
        assert info.value.code == "invalid_job" and "`job_id`" in info.value.message
        # A batch is refused whole: its good request is not stored either.
        good = SubmitRequest(images=[make_image(442)], prompt=PROMPT, job_id="fine-1")
        bad = SubmitRequest(images=[make_image(443)], prompt=PROMPT, job_id=job_id)
        with pytest.raises(InvalidJobError):
            c.submit_many([good, bad])
    assert redis.Redis.from_url(url).dbsize() == 0


def test_good_ids_and_the_api_s_scoped_ids_are_accepted(stack: Stack) -> None:
    url = stack.idle_redis_url()
    with Client(Settings(redis_url=url)) as c:
        assert c.submit([make_image(444)], PROMPT, job_id="A-z_0.9:" + "x" * 120) != ""
        # The API submits a tenant's job under `<tenant>~<id>` with that tenant set.
        scoped = SubmitRequest(images=[make_image(445)], prompt=PROMPT, job_id="acme~order-7",
                               tenant="acme")  # fmt: skip
        assert c.submit_many([scoped]) == ["acme~order-7"]
        for wrong in ("other~order-7", "acme~a~b", "acme~"):
            req = SubmitRequest(images=[make_image(446)], prompt=PROMPT, job_id=wrong,
                                tenant="acme")  # fmt: skip
            with pytest.raises(InvalidJobError):
                c.submit_many([req])
        assert c.get("acme~order-7") is not None and c.get("other~order-7") is None


@pytest.mark.parametrize("deadline", [0, -1.0, float("nan"), float("inf"), True, "soon"])
def test_a_bad_deadline_fails_the_job_without_a_run(stack: Stack, deadline: object) -> None:
    """Like the HTTP API's 400: the job is a failed `invalid_job` record (bad input, not an error)."""
    url = stack.idle_redis_url()
    with Client(Settings(redis_url=url)) as c:
        job_id = c.submit([make_image(447)], PROMPT, deadline_seconds=deadline)
        res = c.get(job_id)
    assert res is not None and res.status == "failed"
    assert res.error is not None and res.error.code == "invalid_job"
    assert "deadline_seconds" in res.error.message
