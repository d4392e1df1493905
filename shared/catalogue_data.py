"""The built-in model facts: a snapshot of OpenAI's public docs and price list (2025).

Read only through ``shared.catalogue`` (which builds these lazily, once). Prices are USD per 1M
tokens; limits are tier-1 figures, deliberately low: a too-high default costs 429s, a too-low one
only costs throughput until the API's headers correct it. Image-generation models take their
options, per-image prices and images-per-minute from ``shared.image_models`` (one table per fact).
"""

from __future__ import annotations

from shared.catalogue_types import (
    ALL_TEXT,
    Capability,
    ModelSpec,
    TierLimits,
    TokenPrices,
    VisionRule,
)

_NO_STRUCTURED: frozenset[Capability] = ALL_TEXT - {"structured_outputs"}
_RESPONSES_ONLY: frozenset[Capability] = frozenset({"vision", "responses"})

# name: (vision rule, (input, cached input, output) USD/1M, (TPM, RPM), context, max output, caps)
_TEXT_MODELS: dict[
    str,
    tuple[
        VisionRule,
        tuple[float, float | None, float],
        tuple[int, int],
        int,
        int,
        frozenset[Capability],
    ],
] = {
    "gpt-4o": (VisionRule("tile", 85, 170), (2.50, 1.25, 10.00), (30_000, 500), 128_000, 16_384, ALL_TEXT),
    "gpt-4o-mini": (VisionRule("tile", 2833, 5667), (0.15, 0.075, 0.60), (200_000, 500), 128_000, 16_384, ALL_TEXT),
    "chatgpt-4o-latest": (VisionRule("tile", 85, 170), (5.00, None, 15.00), (30_000, 500), 128_000, 16_384, _NO_STRUCTURED),
    "gpt-4.1": (VisionRule("tile", 85, 170), (2.00, 0.50, 8.00), (30_000, 500), 1_047_576, 32_768, ALL_TEXT),
    "gpt-4.1-mini": (VisionRule("patch", multiplier=1.62), (0.40, 0.10, 1.60), (200_000, 500), 1_047_576, 32_768, ALL_TEXT),
    "gpt-4.1-nano": (VisionRule("patch", multiplier=2.46), (0.10, 0.025, 0.40), (200_000, 500), 1_047_576, 32_768, ALL_TEXT),
    "gpt-4.5-preview": (VisionRule("tile", 85, 170), (75.00, 37.50, 150.00), (125_000, 1_000), 128_000, 16_384, ALL_TEXT),
    "gpt-5": (VisionRule("tile", 70, 140), (1.25, 0.125, 10.00), (30_000, 500), 400_000, 128_000, ALL_TEXT),
    "gpt-5-mini": (VisionRule("patch", multiplier=1.62), (0.25, 0.025, 2.00), (200_000, 500), 400_000, 128_000, ALL_TEXT),
    "gpt-5-nano": (VisionRule("patch", multiplier=2.46), (0.05, 0.005, 0.40), (200_000, 500), 400_000, 128_000, ALL_TEXT),
    "o4-mini": (VisionRule("patch", multiplier=1.72), (1.10, 0.275, 4.40), (100_000, 1_000), 200_000, 100_000, ALL_TEXT),
    "o1": (VisionRule("tile", 75, 150), (15.00, 7.50, 60.00), (30_000, 500), 200_000, 100_000, ALL_TEXT),
    "o3": (VisionRule("tile", 75, 150), (2.00, 0.50, 8.00), (30_000, 500), 200_000, 100_000, ALL_TEXT),
    "computer-use-preview": (VisionRule("tile", 65, 129), (3.00, None, 12.00), (20_000, 300), 8_192, 1_024, _RESPONSES_ONLY),
}  # fmt: skip

# Image-generation models: (TPM, RPM) at tier 1; images per minute come from shared.image_models.
_IMAGE_MODEL_LIMITS: dict[str, tuple[int | None, int]] = {
    "gpt-image-1": (100_000, 500),
    "dall-e-3": (None, 500),
    "dall-e-2": (None, 500),
}


def builtin_models() -> list[ModelSpec]:
    """Every built-in entry (called once by ``shared.catalogue``, never at import)."""
    from shared.image_models import IMAGE_MODELS

    out = [
        ModelSpec(
            name=name,
            capabilities=caps,
            limits=TierLimits(tpm=tpm, rpm=rpm),
            vision=vision,
            prices=TokenPrices(input=p_in, cached_input=p_cached, output=p_out),
            context_window=context,
            max_output_tokens=max_out,
        )
        for name, (vision, (p_in, p_cached, p_out), (tpm, rpm), context, max_out, caps) in (
            _TEXT_MODELS.items()
        )
    ]
    for name, (tpm, rpm) in _IMAGE_MODEL_LIMITS.items():
        spec = IMAGE_MODELS[name]
        out.append(
            ModelSpec(
                name=name,
                capabilities=frozenset({"image_generation"}),
                limits=TierLimits(tpm=tpm, rpm=rpm, ipm=spec.ipm),
                image_generation=spec,
            )
        )
    return out
