"""Content hashes for dedup: the same normalised image (and prompt, model, parameters) → same key.

Hashing the *prepared* bytes, not the upload, makes a re-saved or re-uploaded copy of a photo
(different EXIF, same pixels at the sent size) hit the same finished result.

>>> dedup_key(["ab" * 32], prompt="Describe", model="gpt-4o", params={"detail": "high"})[:12]
'4764ff45d826'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from shared.images.prepare import PreparedImage


def image_content_hash(prepared: PreparedImage) -> str:
    """sha256 hex of the normalised bytes that are sent to the model."""
    return hashlib.sha256(prepared.data).hexdigest()


def dedup_key(
    image_hashes: Sequence[str], *, prompt: str, model: str, params: Mapping[str, Any]
) -> str:
    """sha256 hex of (image hashes in order, prompt, model, parameters) as canonical JSON.

    ``params`` holds whatever changes the answer: detail per image, max output tokens, JSON
    schema, API. Job ids, metadata and priority must stay out of it.
    """
    doc = {"images": list(image_hashes), "prompt": prompt, "model": model, "params": params}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
