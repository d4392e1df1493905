"""The one exception tree of imgq. Every job failure carries exactly one of these codes.

    ImgqError                          code            retryable
    ├── ConfigurationError             configuration_error  (imgq itself is not set up: raised to the
    │                                                         caller, never a job's failure)
    ├── RetryableError                 (retrying may help; the worker backs off and tries again)
    │   ├── RateLimitedError           rate_limited         (429 rate_limit_exceeded; honours retry_after)
    │   ├── UpstreamServerError        api_error            (5xx from the API)
    │   ├── UpstreamTimeoutError       timeout
    │   ├── UpstreamConnectionError    connection_error
    │   ├── CapacityWaitTimeoutError   capacity_timeout     (the limiter gave no capacity in time)
    │   └── StorageUnavailableError    storage_unavailable  (Redis/S3 could not be reached)
    └── PermanentError                 (retrying cannot help; the job fails at once, no API call spent)
        ├── InvalidJobError            invalid_job
        │   ├── InvalidJsonSchemaError     invalid_json_schema  (refused at submit)
        │   ├── UnsupportedByModelError    unsupported_by_model (the model lacks vision/api/schemas)
        │   └── JobTooLargeError           job_too_large        (a per-job cap at submit, one code each:)
        │       too_many_images, job_input_too_large, job_pixels_too_large, prompt_too_large,
        │       context_length_exceeded, max_output_tokens_too_large, metadata_too_large,
        │       json_schema_too_large
        ├── PromptContainsImageError   prompt_contains_image
        ├── ImageError
        │   ├── InvalidImageError          invalid_image
        │   ├── UnsupportedImageFormatError unsupported_image_format
        │   ├── ImageTooLargeError         image_too_large
        │   ├── ImageFetchError            image_fetch_failed
        │   └── ImageUrlForbiddenError     image_url_forbidden   (SSRF guard)
        ├── ImageNotFoundError         image_not_found      (stored image expired or missing)
        ├── RequestTooLargeError       request_too_large    (can never fit the TPM limit)
        ├── InsufficientQuotaError     insufficient_quota
        ├── BadRequestError            bad_request          (other 400s; `code` keeps the API's own code)
        ├── AuthenticationError        authentication_error (401)
        ├── PermissionDeniedError      permission_denied    (403)
        ├── NotFoundError              model_not_found      (404)
        ├── OutputParseError           output_parse_error   (structured output was not valid JSON)
        ├── ModerationBlockedError     moderation_blocked   (image generation refused by safety system)
        ├── PoisonJobError             poison_job           (crashed IMGQ_MAX_DELIVERIES deliveries)
        ├── JobExpiredError            expired              (not finished by its deadline)
        ├── BatchExpiredError          batch_expired        (its Batch API batch expired; not re-routed)
        ├── BatchFailedError           batch_failed         (its Batch API batch failed; not re-routed)
        ├── BatchCancelledError        batch_cancelled      (its Batch API batch was cancelled)
        ├── QuotaExceededError         quota_exceeded       (the API key may not: model, output, priority)
        ├── BudgetExceededError        budget_exceeded      (the API key's cost budget is spent)
        └── JobCancelledError          cancelled            (cancelled by its owner while queued)

Example:
    >>> try:
    ...     raise InvalidImageError("the file is empty (0 bytes)")
    ... except ImgqError as exc:
    ...     (exc.code, exc.retryable)
    ('invalid_image', False)
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BatchCancelledError",
    "BatchExpiredError",
    "BatchFailedError",
    "BudgetExceededError",
    "CapacityWaitTimeoutError",
    "ConfigurationError",
    "ImageError",
    "ImageFetchError",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "ImageUrlForbiddenError",
    "ImgqError",
    "InsufficientQuotaError",
    "InvalidImageError",
    "InvalidJobError",
    "InvalidJsonSchemaError",
    "JobCancelledError",
    "JobTooLargeError",
    "ModerationBlockedError",
    "NotFoundError",
    "OutputParseError",
    "PermanentError",
    "PermissionDeniedError",
    "PromptContainsImageError",
    "QuotaExceededError",
    "RateLimitedError",
    "RequestTooLargeError",
    "RetryableError",
    "StorageUnavailableError",
    "UnsupportedByModelError",
    "UnsupportedImageFormatError",
    "UpstreamConnectionError",
    "UpstreamServerError",
    "UpstreamTimeoutError",
]


class ImgqError(Exception):
    """Base of every imgq error: a stable `code`, a message a person understands, `retryable`."""

    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # An instance may carry a more specific code than its class (e.g. the API's own 400 code).
        if code is not None:
            self.code = code  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ConfigurationError(ImgqError):
    """imgq is missing a setting it needs (the message names the variable to set)."""

    code = "configuration_error"


class RetryableError(ImgqError):
    retryable = True
    code = "retryable_error"


class PermanentError(ImgqError):
    retryable = False
    code = "permanent_error"


# -- retryable ------------------------------------------------------------------------------------
class RateLimitedError(RetryableError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UpstreamServerError(RetryableError):
    code = "api_error"


class UpstreamTimeoutError(RetryableError):
    code = "timeout"


class UpstreamConnectionError(RetryableError):
    code = "connection_error"


class CapacityWaitTimeoutError(RetryableError):
    code = "capacity_timeout"


class StorageUnavailableError(RetryableError):
    code = "storage_unavailable"


# -- permanent ------------------------------------------------------------------------------------
class InvalidJobError(PermanentError):
    code = "invalid_job"


# -- refused at submit by shared/admission.py (no API call, nothing stored) -------------------------
class InvalidJsonSchemaError(InvalidJobError):
    code = "invalid_json_schema"


class UnsupportedByModelError(InvalidJobError):
    code = "unsupported_by_model"


class JobTooLargeError(InvalidJobError):
    """Over one of the per-job caps; instances carry the cap's own code (e.g. prompt_too_large)."""

    code = "job_too_large"
    CODES: ClassVar[frozenset[str]] = frozenset(
        {
            "too_many_images",
            "job_input_too_large",
            "job_pixels_too_large",
            "prompt_too_large",
            "context_length_exceeded",
            "max_output_tokens_too_large",
            "metadata_too_large",
            "json_schema_too_large",
        }
    )


class PromptContainsImageError(PermanentError):
    code = "prompt_contains_image"


class ImageError(PermanentError):
    code = "invalid_image"


class InvalidImageError(ImageError):
    code = "invalid_image"


class UnsupportedImageFormatError(ImageError):
    code = "unsupported_image_format"


class ImageTooLargeError(ImageError):
    code = "image_too_large"


class ImageFetchError(ImageError):
    code = "image_fetch_failed"


class ImageUrlForbiddenError(ImageError):
    code = "image_url_forbidden"


class ImageNotFoundError(PermanentError):
    code = "image_not_found"


class RequestTooLargeError(PermanentError):
    code = "request_too_large"


class InsufficientQuotaError(PermanentError):
    code = "insufficient_quota"


class BadRequestError(PermanentError):
    code = "bad_request"


class AuthenticationError(PermanentError):
    code = "authentication_error"


class PermissionDeniedError(PermanentError):
    code = "permission_denied"


class NotFoundError(PermanentError):
    code = "model_not_found"


class OutputParseError(PermanentError):
    code = "output_parse_error"


class ModerationBlockedError(PermanentError):
    """The API's safety system refused the prompt or images (image generation): never retried."""

    code = "moderation_blocked"


class PoisonJobError(PermanentError):
    code = "poison_job"


class JobExpiredError(PermanentError):
    code = "expired"


class BatchExpiredError(PermanentError):
    code = "batch_expired"


class BatchFailedError(PermanentError):
    code = "batch_failed"


class BatchCancelledError(PermanentError):
    code = "batch_cancelled"


# -- issue 11: per API key quotas and budgets, and cancelling (the HTTP API) -------------------
class QuotaExceededError(PermanentError):
    code = "quota_exceeded"


class BudgetExceededError(PermanentError):
    code = "budget_exceeded"


class JobCancelledError(PermanentError):
    code = "cancelled"
