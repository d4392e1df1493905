"""One job's uploaded images, checked as they arrive: sniffed, header read, summed against caps.

>>> budget = UploadBudget(AdmissionLimits(max_job_input_bytes=2 * MiB))
>>> budget.add_bytes(3 * MiB)
Traceback (most recent call last):
    ...
shared.errors.JobTooLargeError: the job's uploaded images are over 2 MiB in total (IMGQ_MAX_JOB_INPUT_BYTES)
"""

from __future__ import annotations

import asyncio

from shared.admission import AdmissionLimits, MiB, job_too_large
from shared.images.decode import open_image
from shared.images.policy import ImagePolicy

INLINE_HEADER_BYTES = 64 * 1024  # uploads up to this size have their header read on the loop


class UploadBudget:
    """The uploaded images of one job: each sniffed and its header read (never decoded), and
    their bytes and pixels summed against the job's caps. Nothing is stored here.
    """

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.bytes = 0
        self.pixels = 0

    def add_bytes(self, n: int) -> None:
        """Count ``n`` more bytes (call before reading the next upload, to stop early)."""
        self.bytes += n
        cap = self.limits.max_job_input_bytes
        if self.bytes > cap:
            raise job_too_large(
                "job_input_too_large",
                f"the job's uploaded images are over {cap / MiB:.0f} MiB in total"
                " (IMGQ_MAX_JOB_INPUT_BYTES)",
            )

    async def add(self, data: bytes) -> tuple[int, int]:
        """Check one upload; returns its (width, height). Typed image errors on bad bytes."""
        self.add_bytes(len(data))
        if len(data) <= INLINE_HEADER_BYTES:  # a thread hop costs more than a small header
            w, h = _header_size(data, self.limits.image_policy)
        else:
            w, h = await asyncio.to_thread(_header_size, data, self.limits.image_policy)
        self.pixels += w * h
        cap = self.limits.max_job_pixels
        if self.pixels > cap:
            raise job_too_large(
                "job_pixels_too_large",
                f"the job's uploaded images add up to over {cap / 1e6:.0f} MP"
                " (IMGQ_MAX_JOB_PIXELS)",
            )
        return w, h


def _header_size(data: bytes, policy: ImagePolicy) -> tuple[int, int]:
    opened = open_image(data, policy)  # magic bytes, then Pillow's lazy open: header only
    try:
        return opened.image.size
    finally:
        opened.image.close()


__all__ = ["UploadBudget"]
