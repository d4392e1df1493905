"""What a producer hands over (path, bytes, base64, data URL, http(s) URL, s3://) as a typed source.

Nothing here trusts a declared type: bytes are validated later by magic bytes.

>>> parse_source("https://example.com/cat.png")
UrlSource(url='https://example.com/cat.png')
>>> parse_source("s3://bucket/photos/cat.jpg")
S3Source(bucket='bucket', key='photos/cat.jpg')
>>> parse_source("data:image/png;base64,iVBORw0KGgo=").data[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from shared.errors import (
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    StorageUnavailableError,
)
from shared.images.formats import sniff
from shared.images.policy import DEFAULT_MAX_BYTES
from shared.s3 import parse_s3_ref, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from shared.settings import Settings

_B64_RE: Final = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")
_WS: Final = re.compile(rb"\s+")


@dataclass(frozen=True)
class BytesSource:
    """Image bytes already in hand (from a file, base64 or a data URL); ``name`` says from where."""

    data: bytes = field(repr=False)
    name: str | None = None


@dataclass(frozen=True)
class UrlSource:
    """An http(s) URL that imgq fetches itself (``fetch_image``) and sends as base64."""

    url: str


@dataclass(frozen=True)
class S3Source:
    """An object in S3 (or an S3-compatible store), read with ``read_s3``."""

    bucket: str
    key: str


ImageSource = BytesSource | UrlSource | S3Source


def _short(value: str, n: int = 60) -> str:
    return value if len(value) <= n else value[:n] + f"... ({len(value)} chars)"


def _too_large(n: int, max_bytes: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"the image is about {n / 2**20:.1f} MB, "
        f"over the {max_bytes / 2**20:.1f} MB limit per image"
    )


def _b64decode(text: bytes, what: str, max_bytes: int) -> bytes:
    text = _WS.sub(b"", text)
    if len(text) * 3 // 4 > max_bytes:  # refuse a huge payload before decoding it
        raise _too_large(len(text) * 3 // 4, max_bytes)
    if not text or not _B64_RE.fullmatch(text):
        raise InvalidImageError(f"{what} is not valid base64")
    try:
        if b"-" in text or b"_" in text:
            return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError(f"{what} is not valid base64") from None


def _parse_data_url(value: str, max_bytes: int) -> BytesSource:
    head, sep, payload = value.partition(",")
    if not sep:
        raise InvalidImageError("malformed data URL: no ',' between the header and the data")
    params = head[5:].split(";")
    if "base64" not in (p.strip().lower() for p in params[1:]):
        raise InvalidImageError("data URL is not base64-encoded (';base64' is missing)")
    data = _b64decode(payload.encode("ascii", "replace"), "the data URL's payload", max_bytes)
    return BytesSource(data, "data-url")


def _read_file(path: Path, max_bytes: int) -> BytesSource:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise InvalidImageError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InvalidImageError(f"{path} is a directory, not an image file") from None
    except PermissionError:
        raise InvalidImageError(f"cannot read {path}: permission denied") from None
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return BytesSource(data, str(path))


def parse_source(
    value: str | bytes | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_paths: bool = True,
) -> ImageSource:
    """Classify ``value``; files, base64 and data URLs are read/decoded now, URLs and S3 later.

    ``allow_paths=False`` is for code handling untrusted input (a worker): a string is then never
    read as a local file. Raises ``InvalidImageError`` or ``ImageTooLargeError``.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if len(data) > max_bytes:
            raise _too_large(len(data), max_bytes)
        return BytesSource(data, None)
    if isinstance(value, os.PathLike):
        if not allow_paths:
            raise InvalidImageError("local file paths are not accepted here")
        return _read_file(Path(value).expanduser(), max_bytes)
    text = value.strip()
    if not text:
        raise InvalidImageError("empty image reference (no path, URL or data)")
    lower = text[:16].lower()
    if lower.startswith("data:"):
        return _parse_data_url(text, max_bytes)
    if lower.startswith(("http://", "https://")):
        return UrlSource(text)
    if lower.startswith("s3://"):
        try:
            return S3Source(*parse_s3_ref(text))
        except ValueError:
            raise InvalidImageError(
                f"an S3 reference needs s3://bucket/key, got {_short(text)!r}"
            ) from None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        scheme = text.split(":", 1)[0]
        raise InvalidImageError(f"unsupported URL scheme {scheme!r}: use http(s), s3 or data")
    if allow_paths and len(text) < 4096:
        path = Path(text).expanduser()
        try:
            if path.exists():
                return _read_file(path, max_bytes)
        except OSError:  # e.g. a name too long to be a path: try base64 below
            pass
    try:
        data = _b64decode(text.encode("ascii", "replace"), "the value", max_bytes)
    except InvalidImageError:
        data = b""
    if data and sniff(data) is not None:
        return BytesSource(data, "base64")
    if allow_paths and len(text) < 1024 and not data:
        raise InvalidImageError(f"no such file: {_short(text)}")
    raise InvalidImageError(
        f"not a file, URL, s3:// reference, data URL or base64 image: {_short(text)!r}"
    )


def read_s3(
    bucket: str,
    key: str,
    *,
    settings: Settings,
    client: S3Client | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """Read ``s3://bucket/key`` (honours ``settings.s3_endpoint_url``); oversized objects refused.

    Raises ``ImageFetchError`` (missing object, no access), ``ImageTooLargeError`` or
    ``StorageUnavailableError`` (the store cannot be reached: retrying may help).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    cap = max_bytes if max_bytes is not None else settings.max_image_bytes
    client = client or s3_client(settings)  # the process's one client, not one per image
    where = f"s3://{bucket}/{key}"
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
        if obj.get("ContentLength", 0) > cap:
            obj["Body"].close()
            raise _too_large(obj["ContentLength"], cap)
        body = obj["Body"]
        data = body.read(cap + 1)
        body.close()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ImageFetchError(f"{where} does not exist") from None
        if code in ("NoSuchBucket",):
            raise ImageFetchError(f"bucket {bucket!r} does not exist") from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ImageFetchError(f"access to {where} was denied ({code})") from None
        raise StorageUnavailableError(f"S3 error reading {where}: {code}") from None
    except BotoCoreError as exc:
        raise StorageUnavailableError(
            f"S3 could not be reached for {where}: {type(exc).__name__}"
        ) from None
    if len(data) > cap:
        raise _too_large(len(data), cap)
    return data
