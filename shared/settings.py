"""Typed settings from the environment (``IMGQ_*`` plus ``OPENAI_*`` and ``AWS_*``).

>>> s = Settings(redis_url="redis://127.0.0.1:6399/0")
>>> s.effective_broker_url
'redis://127.0.0.1:6399/0'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything imgq reads from its environment; build one per process and pass it in."""

    model_config = SettingsConfigDict(env_prefix="IMGQ_", extra="ignore", populate_by_name=True)

    # -- connections --------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None, description="Redis for results, images and the limiter; unset: embedded Redis"
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

    # -- image fetching -----------------------------------------------------------------------
    fetch_allow_hosts: list[str] = Field(
        default_factory=list, description="hosts/CIDRs exempt from the SSRF guard (e.g. 127.0.0.1)"
    )
    fetch_timeout_seconds: float = 20.0
    fetch_max_redirects: int = 3

    # -- workers and metrics ------------------------------------------------------------------
    worker_concurrency: int = 256
    metrics_port: int | None = None
    log_level: str = "INFO"

    @field_validator("openai_api_key", "openai_base_url", "redis_url", "broker_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose and shells pass `VAR=` for "not set": treat an empty value as missing.
        return None if value == "" else value

    @property
    def effective_broker_url(self) -> str | None:
        return self.broker_url or self.redis_url
