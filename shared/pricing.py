"""List prices in USD per 1M tokens (standard tier, no cached-input discount), for estimates.

Prices change: this table is a snapshot of OpenAI's public price list (2025), used only to show a
user what a batch will cost before it runs. Matching is by longest model-name prefix, like
``shared.vision_tokens``, so dated snapshots ("gpt-4o-2024-08-06") use their family's price.

>>> cost_usd("gpt-4o", 765, 0)
0.0019125
>>> round(cost_usd("gpt-4.1-mini", 1_000_000, 1_000_000), 2)
2.0
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input: float  # USD per 1M input (prompt) tokens
    output: float  # USD per 1M output tokens


PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "chatgpt-4o": Price(5.00, 15.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.5": Price(75.00, 150.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-5": Price(1.25, 10.00),
    "o4-mini": Price(1.10, 4.40),
    "o1": Price(15.00, 60.00),
    "o3": Price(2.00, 8.00),
    "computer-use-preview": Price(3.00, 12.00),
}


def price(model: str) -> Price:
    """The price of ``model`` (longest matching prefix); unknown models raise ``KeyError``."""
    best = max((p for p in PRICES if model.startswith(p)), key=len, default="")
    if not best:
        raise KeyError(f"no price known for model {model!r}")
    return PRICES[best]


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    """USD for ``input_tokens`` prompt tokens and ``output_tokens`` completion tokens."""
    p = price(model)
    return (input_tokens * p.input + output_tokens * p.output) / 1_000_000
