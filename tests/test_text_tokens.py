"""Text tokens: o200k_base counts, OpenAI's per-message framing, and offline operation."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from shared.text_tokens import count_tokens, prompt_tokens

ROOT = Path(__file__).resolve().parent.parent


def test_counts() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("What is in this image?") == 6
    # special-token strings are plain text, never an error
    assert count_tokens("<|endoftext|>") > 1


def test_prompt_tokens_framing() -> None:
    # 6 text tokens + 765 image tokens + 3 per message + 3 reply priming (one message)
    assert prompt_tokens(["What is in this image?"], image_tokens=[765]) == 777
    assert prompt_tokens(["What is in this image?"], [765], messages=2) == 780
    assert prompt_tokens([], [85, 85]) == 176


def test_works_offline_from_an_empty_cache(tmp_path: Path) -> None:
    """A fresh cache and no network at all: the shipped BPE file is used, checked by sha256."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from shared.text_tokens import count_tokens\n"
        "print(count_tokens('hello world'))\n"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "2"
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    cached = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    assert digest == "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
