"""What a result may echo of an image source: never credentials, query strings or fragments.

>>> redact_source("https://user:pw@bucket.example.com/a.png?X-Amz-Signature=abc#f")
'https://bucket.example.com/a.png'
>>> redact_source("photos/cat.jpg")
'photos/cat.jpg'
>>> redact_source("s3://bucket/key.png?versionId=3")
's3://bucket/key.png'
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_source(text: str) -> str:
    """``text`` without userinfo, query and fragment when it is a URL; other text unchanged."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


__all__ = ["redact_source"]
