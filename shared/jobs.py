"""Job and result models: the JSON that travels through the broker and lands in the result store.

Image bytes never travel in a job: each image is a reference (`ref`) to the image store
(``redis:<key>``, ``s3://bucket/key``) or a URL the worker fetches itself.

>>> job = Job(prompt="Describe it", images=[ImageSpec(ref="https://example.com/a.png")])
>>> job.model, job.api, job.priority
('gpt-4.1-mini', 'chat', 'interactive')
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from shared.generation import GenerationSpec, Kind, OutputImage
from shared.vision_tokens import Detail

Api = Literal["chat", "responses"]
Priority = Literal["interactive", "bulk"]
# online: call the API now; batch: through the Batch API at half price (hours, not seconds);
# auto: batch for bulk jobs when the operator enables it (IMGQ_BATCH_AUTO), else online.
Route = Literal["online", "batch", "auto"]
Status = Literal["queued", "running", "succeeded", "failed"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed"})


def new_job_id() -> str:
    return uuid.uuid4().hex


class ImageSpec(BaseModel):
    """One image of a job: where the worker finds it, and the detail to send it at."""

    ref: str
    detail: Detail = "auto"
    source: str | None = None  # what the producer was given (path or URL), echoed in results


class Job(BaseModel):
    job_id: str = Field(default_factory=new_job_id, min_length=1, max_length=200)
    # analyze/edit: at least one image (checked below); generate: none.
    images: list[ImageSpec] = Field(default_factory=list)
    prompt: str = Field(min_length=1)
    model: str = "gpt-4.1-mini"
    api: Api = "chat"
    max_output_tokens: int = Field(default=1024, ge=1, le=200_000)
    json_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "interactive"
    max_image_tokens: int | None = Field(default=None, ge=1)
    dedup: bool = True
    submitted_at: float = Field(default_factory=time.time)
    route: Route = "online"
    expires_at: float | None = None  # deadline (unix s): not finished by then -> failed `expired`
    # Image generation (issue 15): kind != analyze runs workers/generate.py with these options.
    kind: Kind = "analyze"
    generation: GenerationSpec | None = None
    tenant: str | None = None  # issue 11: the API key's tenant (scopes dedup; None: direct use)
    callback_url: str | None = Field(default=None, max_length=2048)  # issue 11: webhook
    # issue 11: call the API with stream=True and publish the text as it comes (vision jobs;
    # the result is the same document either way). See shared/job_stream.py.
    stream: bool = False

    @model_validator(mode="after")
    def _images_for_kind(self) -> Job:
        if self.kind != "generate" and not self.images:
            raise ValueError(f"a {self.kind} job needs at least one image")
        return self


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int = 0
    estimated_input_tokens: int = 0
    billed_input_tokens: int = 0
    billed_output_tokens: int = 0


class ErrorInfo(BaseModel):
    code: str
    message: str
    retryable: bool = False


class Timings(BaseModel):
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    api_seconds: float = 0.0


class Result(BaseModel):
    job_id: str
    status: Status = "queued"
    output_text: str | None = None
    output_json: Any = None
    usage: Usage = Field(default_factory=Usage)
    # None: the API was paid but the model has no price in the catalogue (shared/catalogue.py).
    cost_usd: float | None = 0.0
    attempts: int = 0
    timings: Timings = Field(default_factory=Timings)
    error: ErrorInfo | None = None
    model: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    sources: list[str | None] = Field(default_factory=list)
    dedup_of: str | None = None  # job whose API call this result reuses
    route: Literal["online", "batch"] | None = None  # how it was (or is being) answered
    batch_id: str | None = None  # the imgq batch that answered it (route batch)
    images: list[OutputImage] = Field(default_factory=list)  # generate/edit jobs' outputs

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES
