"""parse_source on every kind of input, and read_s3 against a real S3-compatible server (moto)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from shared.embedded_redis import free_port
from shared.errors import (
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    StorageUnavailableError,
)
from shared.images import BytesSource, S3Source, UrlSource, parse_source, read_s3
from shared.settings import Settings
from tests.images import samples as s

JPEG = s.encode(s.photo((64, 48)), "JPEG")


def test_kinds(tmp_path: Path) -> None:
    path = tmp_path / "a photo.jpg"
    path.write_bytes(JPEG)
    assert parse_source(path) == BytesSource(JPEG, str(path))
    assert parse_source(str(path)).data == JPEG  # type: ignore[union-attr]
    assert parse_source(JPEG) == BytesSource(JPEG, None)
    b64 = base64.b64encode(JPEG).decode()
    assert parse_source(b64) == BytesSource(JPEG, "base64")
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))  # MIME line breaks
    assert parse_source(wrapped) == BytesSource(JPEG, "base64")
    urlsafe = base64.urlsafe_b64encode(JPEG).decode().rstrip("=")
    assert parse_source(urlsafe) == BytesSource(JPEG, "base64")
    assert parse_source(f"data:image/jpeg;base64,{b64}") == BytesSource(JPEG, "data-url")
    assert parse_source(f"DATA:image/jpeg;charset=x;BASE64,{b64}").data == JPEG  # type: ignore[union-attr]
    assert parse_source(" https://h.example/a.png ") == UrlSource("https://h.example/a.png")
    assert parse_source("s3://bkt/dir/a.png") == S3Source("bkt", "dir/a.png")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("s3://bucket-only", "s3://bucket/key"),
        ("s3:///key", "s3://bucket/key"),
        ("gopher://x/y", "scheme"),
        ("data:image/png;base64", "malformed"),
        ("aGVsbG8gd29ybGQ=", "not a file, URL"),  # valid base64 of "hello world": not an image
        ("", "empty"),
        ("/nonexistent/dir/photo.jpg", "no such file"),
    ],
)
def test_bad_values(value: str, words: str) -> None:
    with pytest.raises(InvalidImageError, match=words):
        parse_source(value)


def test_paths_refused_for_untrusted_input(tmp_path: Path) -> None:
    path = tmp_path / "secret.jpg"
    path.write_bytes(JPEG)
    with pytest.raises(InvalidImageError):
        parse_source(str(path), allow_paths=False)
    with pytest.raises(InvalidImageError):
        parse_source(path, allow_paths=False)


def test_size_caps(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(JPEG + bytes(5000))
    with pytest.raises(ImageTooLargeError):
        parse_source(big, max_bytes=4096)
    with pytest.raises(ImageTooLargeError):
        parse_source(bytes(5000), max_bytes=4096)
    with pytest.raises(ImageTooLargeError):
        parse_source("data:image/png;base64," + "A" * 8000, max_bytes=4096)


# -- S3 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_settings(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return Settings(s3_endpoint_url=s3_endpoint, max_image_bytes=10_000)


def test_read_s3(s3_settings: Settings) -> None:
    client = boto3.client("s3", endpoint_url=s3_settings.s3_endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket="imgs")
    client.put_object(Bucket="imgs", Key="a/photo.jpg", Body=JPEG)
    client.put_object(Bucket="imgs", Key="big.bin", Body=bytes(20_000))
    assert read_s3("imgs", "a/photo.jpg", settings=s3_settings) == JPEG
    assert read_s3("imgs", "a/photo.jpg", settings=s3_settings, client=client) == JPEG
    with pytest.raises(ImageFetchError, match="does not exist"):
        read_s3("imgs", "missing.jpg", settings=s3_settings)
    with pytest.raises(ImageFetchError, match="bucket"):
        read_s3("no-such-bucket", "x.jpg", settings=s3_settings)
    with pytest.raises(ImageTooLargeError):
        read_s3("imgs", "big.bin", settings=s3_settings)


def test_read_s3_unreachable(s3_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = s3_settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageUnavailableError):
        read_s3("imgs", "a.jpg", settings=dead)
