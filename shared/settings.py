"""Typed settings from the environment (``IMGQ_*`` plus ``OPENAI_*`` and ``AWS_*``).

The one source of imgq's configuration: nothing else reads ``os.environ`` for it. (Only
``shared/text_tokens.py`` looks at tiktoken's own ``TIKTOKEN_CACHE_DIR``, exactly as tiktoken
does, so the offline BPE file lands where tiktoken will read it.)

>>> s = Settings(redis_url="redis://127.0.0.1:6399/0")
>>> s.effective_broker_url
'redis://127.0.0.1:6399/0'
>>> Settings(redis_url="redis://a:6379/0", broker_url="amqp://b//").effective_broker_url
'amqp://b//'
>>> Settings(redis_url=None).require_redis_url()
Traceback (most recent call last):
...
shared.errors.ConfigurationError: no Redis configured: set IMGQ_REDIS_URL (e.g. redis://127.0.0.1:6379/0) or pass redis_url=...; only the `imgq` command line starts an embedded Redis by itself
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError


def _default_data_dir() -> Path:
    # XDG base directories: where a user's programs keep data that must survive a restart.
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "imgq"


class Settings(BaseSettings):
    """Everything imgq reads from its environment; build one per process and pass it in."""

    model_config = SettingsConfigDict(env_prefix="IMGQ_", extra="ignore", populate_by_name=True)

    # -- connections --------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis for results, images and the limiter; required by the library, while "
        "the `imgq` command line starts an embedded Redis when it is unset",
    )
    broker_url: str | None = Field(default=None, description="Celery broker; default: redis_url")
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "IMGQ_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "IMGQ_OPENAI_BASE_URL")
    )

    # -- storage ------------------------------------------------------------------------------
    result_backend: Literal["redis", "s3"] = "redis"
    image_backend: Literal["redis", "s3"] = "redis"
    s3_bucket: str | None = None
    s3_prefix: str = "imgq/"
    s3_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("IMGQ_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
    )
    aws_region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    image_ttl_seconds: int = 24 * 3600
    result_ttl_seconds: int = 7 * 24 * 3600

    # -- jobs and API -------------------------------------------------------------------------
    default_model: str = "gpt-4.1-mini"
    default_max_output_tokens: int = 1024
    request_timeout_seconds: float = 120.0
    max_attempts: int = 5
    max_images_per_job: int = 500
    max_image_bytes: int = 20 * 1024 * 1024
    max_job_image_bytes: int = 50 * 1024 * 1024

    # -- limiter ------------------------------------------------------------------------------
    limits_file: Path | None = Field(default=None, description="JSON file: {model: {tpm, rpm}}")
    model_limits: str | None = Field(
        default=None, description='JSON env: {"gpt-4.1-mini": {"tpm": 200000, "rpm": 500}}'
    )
    capacity_wait_seconds: float = 60.0
    max_in_flight: int = 1000
    tenant_weights: dict[str, float] = Field(
        default_factory=dict, description='JSON env: {"tenant-a": 3, "tenant-b": 1} (fair share)'
    )

    # -- image fetching -----------------------------------------------------------------------
    fetch_allow_hosts: list[str] = Field(
        default_factory=list, description="hosts/CIDRs exempt from the SSRF guard (e.g. 127.0.0.1)"
    )
    fetch_timeout_seconds: float = 20.0
    fetch_max_redirects: int = 3

    # -- model catalogue and submit-time admission (issue 8: shared/catalogue.py, admission.py) --
    models_file: Path | None = Field(
        default=None, description="JSON file extending/overriding the model catalogue"
    )
    unknown_models: Literal["accept", "refuse"] = Field(
        default="accept",
        description="a model neither catalogued nor configured: run it with the documented "
        "defaults and cost_usd null (accept), or fail it at submit with model_not_found (refuse)",
    )
    max_prompt_bytes: int = Field(default=1024 * 1024, ge=1, description="UTF-8 bytes of a prompt")
    max_job_input_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1, description="uploaded image bytes of one job, in total"
    )
    max_job_pixels: int = Field(
        default=1_000_000_000, ge=1, description="decoded pixels of one job's uploaded images"
    )
    max_metadata_bytes: int = Field(default=16 * 1024, ge=2, description="metadata as JSON")
    max_metadata_depth: int = Field(default=16, ge=1, description="nesting of metadata")
    max_json_schema_bytes: int = Field(default=64 * 1024, ge=2, description="json_schema as JSON")
    max_json_schema_depth: int = Field(default=32, ge=1, description="nesting of json_schema")

    # -- bounded resources (issue 10: worker memory, fetch pool, API connections) -------------
    decode_budget_bytes: int = Field(
        default=512 * 1024 * 1024,
        description="per worker process: bytes of images being decoded at once (raw + pixels)",
    )
    image_loads_per_job: int = Field(default=4, description="one job's concurrent image loads")
    image_loads_per_process: int = Field(
        default=24, description="image loads (fetch/read + prepare) at once in one worker"
    )
    fetch_connections: int = Field(default=64, description="the fetch pool of one worker")
    fetch_connections_per_host: int = 8
    api_redis_connections: int = Field(
        default=8, description="Redis connections of one API process, its subscription included"
    )
    api_body_timeout_seconds: float = Field(
        default=30.0, description="time allowed to read one request body; then 408"
    )

    # -- the HTTP API as a shared service (issue 11: keys, tenants, edge, budgets, webhooks) --
    api_auth: Literal["on", "off"] = Field(
        default="on",
        description="off: no API keys, every caller is one tenant (local use only; logged loudly)",
    )
    api_metrics_port: int | None = Field(
        default=None, description="serve the API's /metrics here without a key (internal network)"
    )
    api_metrics_host: str = Field(default="127.0.0.1", description="where that port listens")
    api_cors_origins: list[str] = Field(
        default_factory=list, description="browser origins allowed to call the API (none: CORS off)"
    )
    api_batch_max_jobs: int = Field(default=100, ge=1, description="jobs in one batch request")
    webhook_max_attempts: int = Field(default=8, ge=1, description="deliveries of one webhook")
    webhook_lifetime_seconds: float = Field(
        default=3600.0, description="a webhook not delivered within this long is dropped"
    )
    webhook_timeout_seconds: float = 10.0

    # -- workers and metrics ------------------------------------------------------------------
    worker_concurrency: int = 256
    metrics_port: int | None = None
    log_level: str = Field(default="INFO", description="default log level of `imgq worker` / `api`")

    # -- reliability (issue 9: deliveries, deadlines, result writes, reconciler, eviction) ------
    max_deliveries: int = Field(
        default=5, ge=1, description="deliveries a job may crash before it fails as poison_job"
    )
    redelivery_backoff_seconds: float = Field(
        default=1.0, description="wait before handing a crashed delivery back (doubles, max 60 s)"
    )
    job_deadline_seconds: float = Field(
        default=24 * 3600.0, description="default expires_at = submit + this (<= image TTL)"
    )
    result_write_retry_seconds: float = Field(
        default=600.0, description="how long a paid answer's write is retried while storage is down"
    )
    reconcile_interval_seconds: float = 30.0
    reconcile_stale_seconds: float = Field(
        default=900.0,
        description="an open job with no lease or sign of life for this long is re-enqueued",
    )
    allow_evicting_redis: bool = Field(
        default=False, description="start workers even if Redis's maxmemory-policy may evict keys"
    )

    # -- batch route: OpenAI's Batch API at half price (issue 14) -----------------------------
    batch_auto: bool = Field(
        default=False, description="route=auto jobs of priority bulk go through the Batch API"
    )
    batcher_enabled: bool = Field(default=True, description="workers run the (elected) batcher")
    batch_linger_seconds: float = Field(
        default=600.0, description="a batch is sent when its oldest job waited this long"
    )
    batch_max_requests: int = Field(default=50_000, ge=1, le=50_000)
    batch_max_file_bytes: int = Field(default=200 * 1000 * 1000, ge=1, le=200 * 1024 * 1024)
    batch_poll_min_seconds: float = 5.0
    batch_poll_max_seconds: float = 300.0
    batch_tick_seconds: float = Field(default=1.0, description="how often the batcher looks")
    batch_leader_seconds: float = Field(
        default=15.0, description="a dead batcher leader is replaced within this long"
    )
    batch_fallback: Literal["online", "fail"] = Field(
        default="online",
        description="jobs of an expired/failed batch: re-route online, or fail batch_expired/_failed",
    )

    # -- image generation (issue 15: generate/edit jobs) --------------------------------------
    presigned_url_seconds: int = Field(
        default=3600, ge=1, description="Life of the presigned URLs of generated images (S3)"
    )

    # -- embedded Redis (the `imgq` command line only, when IMGQ_REDIS_URL is unset) ----------
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="where the embedded Redis keeps its append-only file (and the demo its logs)",
    )
    embedded_redis_port: int = 6390

    @field_validator("openai_api_key", "openai_base_url", "redis_url", "broker_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose and shells pass `VAR=` for "not set": treat an empty value as missing.
        return None if value == "" else value

    @property
    def effective_broker_url(self) -> str | None:
        """The Celery broker: ``broker_url``, else the Redis of ``redis_url``."""
        return self.broker_url or self.redis_url

    def require_redis_url(self) -> str:
        """``redis_url``, or a ConfigurationError that says what to set."""
        if not self.redis_url:
            raise ConfigurationError(
                "no Redis configured: set IMGQ_REDIS_URL (e.g. redis://127.0.0.1:6379/0) or pass "
                "redis_url=...; only the `imgq` command line starts an embedded Redis by itself"
            )
        return self.redis_url
