"""Image intake: parse sources, fetch URLs safely, validate and decode, size for the model.

The worker's path for one image::

    source = parse_source(ref, allow_paths=False)
    data = await fetch_image(source.url, settings=settings, session=session)  # UrlSource
    prepared = await loop.run_in_executor(pool, functools.partial(
        prepare_image, data, model=job.model, detail=spec.detail,
        max_image_tokens=job.max_image_tokens))
    content = {"type": "image_url",
               "image_url": {"url": prepared.data_url(), "detail": prepared.detail}}
"""

from shared.images.decode import OpenedImage, open_image
from shared.images.fetch import (
    AllowList,
    GuardedResolver,
    fetch_image,
    host_literal,
    is_forbidden_ip,
    make_fetch_session,
    safe_url,
)
from shared.images.formats import sniff
from shared.images.hashing import dedup_key, image_content_hash
from shared.images.policy import ImagePolicy
from shared.images.prepare import PreparedImage, prepare_image
from shared.images.resize import target_size
from shared.images.sources import (
    BytesSource,
    ImageSource,
    S3Source,
    UrlSource,
    parse_source,
    read_s3,
)

__all__ = [
    "AllowList",
    "BytesSource",
    "GuardedResolver",
    "ImagePolicy",
    "ImageSource",
    "OpenedImage",
    "PreparedImage",
    "S3Source",
    "UrlSource",
    "dedup_key",
    "fetch_image",
    "host_literal",
    "image_content_hash",
    "is_forbidden_ip",
    "make_fetch_session",
    "open_image",
    "parse_source",
    "prepare_image",
    "read_s3",
    "safe_url",
    "sniff",
    "target_size",
]
