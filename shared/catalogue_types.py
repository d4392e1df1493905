"""The typed facts of one model family (see ``shared.catalogue`` for the lookup).

>>> TokenPrices(input=2.50, output=10.00).cost_usd(1_000_000, 100_000)
3.5
>>> TokenPrices(input=2.50, output=10.00).cost_usd(1_000_000, 100_000, batch=True)
1.75
>>> TokenPrices(input=2.50, cached_input=1.25, output=10.00).cost_usd(1_000, 0, cached_input_tokens=1_000)
0.00125
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from shared.image_models import ImageModelSpec

Capability = Literal["vision", "chat", "responses", "structured_outputs", "image_generation"]
CAPABILITIES: frozenset[Capability] = frozenset(
    {"vision", "chat", "responses", "structured_outputs", "image_generation"}
)
ALL_TEXT: frozenset[Capability] = frozenset({"vision", "chat", "responses", "structured_outputs"})
BATCH_DISCOUNT = 0.5  # the Batch API bills half the online price


@dataclass(frozen=True)
class VisionRule:
    """How one model family turns an image into tokens (maths in ``shared.vision_tokens``).

    ``tile``: ``base`` (+ ``tile`` per 512-px tile at high detail); ``patch``: 32-px patches
    times ``multiplier``.
    """

    kind: Literal["tile", "patch"]
    base: int = 0
    tile: int = 0
    multiplier: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("tile", "patch"):
            raise ValueError(f"vision kind must be 'tile' or 'patch', got {self.kind!r}")
        if self.kind == "tile" and (self.base < 0 or self.tile < 0):
            raise ValueError("tile base and tile tokens must not be negative")
        if self.kind == "patch" and not self.multiplier > 0:
            raise ValueError("a patch multiplier must be positive")


@dataclass(frozen=True)
class TokenPrices:
    """USD per 1M tokens. ``cached_input`` None: cached tokens are billed as input."""

    input: float
    output: float
    cached_input: float | None = None
    batch_discount: float = BATCH_DISCOUNT

    def __post_init__(self) -> None:
        values = (self.input, self.output, self.cached_input or 0.0)
        if any(v < 0 for v in values) or not 0 <= self.batch_discount <= 1:
            raise ValueError("prices must not be negative and batch_discount within [0, 1]")

    def cost_usd(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_input_tokens: int = 0,
        batch: bool = False,
    ) -> float:
        """USD for a call; ``input_tokens`` includes the cached ones, as the API reports them."""
        cached = min(max(cached_input_tokens, 0), input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        usd = (
            (input_tokens - cached) * self.input
            + cached * cached_price
            + output_tokens * self.output
        ) / 1_000_000
        return usd * (1 - self.batch_discount) if batch else usd


@dataclass(frozen=True)
class TierLimits:
    """Default limits when neither configuration nor the API's headers say otherwise.

    ``None``: not limited on that axis (e.g. DALL·E has no TPM); ``ipm``: images per minute.
    """

    tpm: int | None = None
    rpm: int | None = None
    ipm: int | None = None

    def __post_init__(self) -> None:
        for name in ("tpm", "rpm", "ipm"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")


@dataclass(frozen=True)
class ModelSpec:
    """Everything imgq knows about one model family, keyed by its canonical ``name``.

    ``context_window`` / ``max_output_tokens`` None: not checked at submit. ``prices`` None: a
    result's ``cost_usd`` is null. ``known`` is False only for the unknown-model defaults.
    """

    name: str
    capabilities: frozenset[Capability]
    limits: TierLimits = field(default_factory=TierLimits)
    vision: VisionRule | None = None
    prices: TokenPrices | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    image_generation: ImageModelSpec | None = field(default=None, compare=False)
    known: bool = True

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities
