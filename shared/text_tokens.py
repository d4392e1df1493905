"""Text token counts with tiktoken's ``o200k_base``, working offline.

tiktoken downloads its BPE files on first use, which fails on hosts without internet. The
``bpe-openai`` wheel ships byte-identical copies; we seed tiktoken's own cache from them (checked
against tiktoken's expected sha256) before the first ``get_encoding``.

Chat prompts are counted as OpenAI counts them: each message costs its text plus
``TOKENS_PER_MESSAGE``, and every prompt ``REPLY_PRIMING`` more; images add their own tokens.

>>> count_tokens("hello world")
2
>>> prompt_tokens(["What is in this image?"], image_tokens=[765])
777
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterable
from importlib import resources

import tiktoken

ENCODING = "o200k_base"
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3

_SOURCES = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
_lock = threading.Lock()


def _tiktoken_cache_dir() -> str:
    # Mirrors tiktoken.load.read_file_cached, so the file lands where tiktoken will look.
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def seed_tiktoken_cache(name: str = ENCODING) -> None:
    """Copy the shipped BPE file into tiktoken's cache (atomic, idempotent, hash-checked)."""
    url, sha256 = _SOURCES[name]
    cache_dir = _tiktoken_cache_dir()
    if not cache_dir:
        return  # caching disabled by the user: tiktoken will download
    path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    if os.path.exists(path):
        return
    blob = resources.files("bpe_openai").joinpath(f"data/{name}.tiktoken.gz").read_bytes()
    data = gzip.decompress(blob)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RuntimeError(f"shipped {name} BPE file does not match tiktoken's expected hash")
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


@functools.cache
def encoding(name: str = ENCODING) -> tiktoken.Encoding:
    with _lock:
        seed_tiktoken_cache(name)
        return tiktoken.get_encoding(name)


# Jobs of one producer mostly share their prompt: remember the counts of short texts (bounded:
# at most _CACHED x _CACHE_MAX_CHARS characters held) instead of re-encoding each job's prompt.
_CACHE_MAX_CHARS = 4096
_CACHED = 512


def count_tokens(text: str) -> int:
    """Tokens of ``text`` in ``o200k_base`` (special-token strings are counted as plain text)."""
    if not text:
        return 0
    if len(text) <= _CACHE_MAX_CHARS:
        return _count_short(text)
    return _count(text)


def _count(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


_count_short = functools.lru_cache(maxsize=_CACHED)(_count)


def prompt_tokens(
    texts: Iterable[str], image_tokens: Iterable[int] = (), *, messages: int = 1
) -> int:
    """Prompt tokens of a request: its text parts, its images and the per-message framing."""
    return (
        sum(count_tokens(t) for t in texts)
        + sum(image_tokens)
        + TOKENS_PER_MESSAGE * messages
        + REPLY_PRIMING
    )
