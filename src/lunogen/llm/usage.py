"""Token counts and USD cost of one model call, exact to the last digit (Decimal)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol


class Priced(Protocol):
    """A catalog model (`CatalogModel` row or `CatalogEntry`): USD per token, decimal strings."""

    @property
    def prompt_price(self) -> str: ...

    @property
    def completion_price(self) -> str: ...


@dataclass(frozen=True)
class Usage:
    """What a call consumed. `cost` is the provider's own figure (OpenRouter's `usage.cost`, in
    USD), None when it did not report one. Cached tokens are part of `prompt_tokens` and
    reasoning tokens part of `completion_tokens`, as in OpenAI's usage object."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any] | None) -> Usage:
        """Read a `usage` object of a completion (or of the last stream chunk)."""
        if not payload:
            return cls()
        prompt_details = payload.get("prompt_tokens_details") or {}
        completion_details = payload.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=_count(payload.get("prompt_tokens")),
            completion_tokens=_count(payload.get("completion_tokens")),
            cached_tokens=_count(_get(prompt_details, "cached_tokens")),
            reasoning_tokens=_count(_get(completion_details, "reasoning_tokens")),
            cost=parse_cost(payload.get("cost")),
        )


def _get(details: Any, key: str) -> Any:
    return details.get(key) if isinstance(details, Mapping) else None


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)


def parse_cost(value: Any) -> Decimal | None:
    """A reported cost as an exact Decimal; None when absent or not a non-negative number.

    JSON numbers arrive as floats: `str(float)` is the shortest text that reads back to the same
    float, which is the text the provider wrote for any cost of up to 17 significant digits.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    if not cost.is_finite() or cost < 0:
        return None
    return cost


def compute_cost(usage: Usage, model: Priced) -> Decimal:
    """The cost of `usage` at the catalog prices of `model`, for providers that report none.

    Cached prompt tokens are charged at the full prompt price (the catalog keeps no cache-read
    price), so the figure is an upper bound when a cache was hit.
    """
    prompt = Decimal(usage.prompt_tokens) * Decimal(model.prompt_price)
    completion = Decimal(usage.completion_tokens) * Decimal(model.completion_price)
    return prompt + completion


def effective_cost(usage: Usage, model: Priced | None) -> Decimal | None:
    """The provider's reported cost, else the catalog price of the usage, else None."""
    if usage.cost is not None:
        return usage.cost
    if model is None:
        return None
    return compute_cost(usage, model)


def dearest_for(usage: Usage, models: Sequence[Priced]) -> Priced | None:
    """The model whose catalog prices make `usage` cost the most (None without models)."""
    return max(models, key=lambda model: compute_cost(usage, model), default=None)


def chain_model(answered: str, chain: Sequence[str]) -> str | None:
    """The model of `chain` that a provider's answering model name is, or is a version of.

    The same name first; then a version: the chain's name followed by `-` and a digit (a date
    or a snapshot number: `gpt-4o-mini-2024-07-18`, `claude-3-opus-20240229`) or by `:` (an
    OpenRouter variant: `:free`, `:extended`). Then the same again without the `vendor/`
    prefixes, as servers other than OpenRouter name models. None when nothing matches.
    """
    for name, key in ((answered, _whole), (_bare(answered), _bare)):
        same = [model for model in chain if key(model) == name]
        if same:
            return same[0]
        versions = [model for model in chain if _is_version(name, key(model))]
        if versions:
            return max(versions, key=lambda model: len(key(model)))
    return None


def _is_version(name: str, model: str) -> bool:
    rest = name.removeprefix(model)
    if rest == name:
        return False
    return rest.startswith(":") or (rest.startswith("-") and rest[1:2].isdigit())


def _whole(model: str) -> str:
    return model


def _bare(model: str) -> str:
    return model.rpartition("/")[2]
