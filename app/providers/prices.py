"""What an LLM call costs: a price table per model, in US dollars per million tokens.

The table ships with list prices for the models the README names, dated (``as_of``), and
is replaced as a whole by the JSON file ``FIT_CHECK_PRICES_FILE`` names (the same shape).
A model that is not in it is *unpriced*: its calls carry no cost and are counted as such,
never as free. The offline analyzer costs 0. Cached input tokens (read from the provider's
prompt cache) are billed at the cached price, the rest of the input at the input price.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TABLE = Path(__file__).with_name("data") / "prices.json"
_PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input: float
    cached_input: float
    output: float

    def cost(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> float:
        cached = min(max(cached_input_tokens, 0), input_tokens)
        return (
            (input_tokens - cached) * self.input
            + cached * self.cached_input
            + output_tokens * self.output
        ) / _PER_MILLION


@dataclass(frozen=True, slots=True)
class PriceTable:
    as_of: str
    prices: dict[str, Price]

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The table at ``path`` (the shipped one when None); ValueError when it is not one."""
        source = path or DEFAULT_TABLE
        try:
            raw: Any = json.loads(source.read_text(encoding="utf-8"))
            prices = {
                str(model): Price(
                    input=float(entry["input"]),
                    cached_input=float(entry.get("cached_input", entry["input"])),
                    output=float(entry["output"]),
                )
                for model, entry in raw["models"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{source} is not a price table: {exc}") from exc
        if any(v < 0 for p in prices.values() for v in (p.input, p.cached_input, p.output)):
            raise ValueError(f"{source}: a price is negative")
        return cls(as_of=str(raw.get("as_of", "")), prices=prices)

    def price(self, model: str) -> Price | None:
        """The model's price; a dated snapshot name (``gpt-4o-mini-2024-07-18``) falls back to
        its family's (``gpt-4o-mini``)."""
        found = self.prices.get(model)
        if found is not None:
            return found
        family = max((m for m in self.prices if model.startswith(m + "-")), key=len, default=None)
        return None if family is None else self.prices[family]
