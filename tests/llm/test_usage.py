"""Usage parsing and cost arithmetic: exact decimals, never floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from lunogen.llm.catalog import CatalogEntry, bundled_models
from lunogen.llm.usage import (
    Usage,
    chain_model,
    compute_cost,
    dearest_for,
    effective_cost,
    parse_cost,
)


def _priced(prompt: str, completion: str) -> CatalogEntry:
    return CatalogEntry(
        id="x/y",
        name="X Y",
        context_length=1000,
        prompt_price=prompt,
        completion_price=completion,
        supported_parameters=[],
    )


def test_compute_cost_is_exact() -> None:
    usage = Usage(prompt_tokens=1_234_567, completion_tokens=89, cached_tokens=1_000_000)
    cost = compute_cost(usage, _priced("0.00000015", "0.0000006"))
    assert cost == Decimal("0.18523845")  # 0.18518505 + 0.0000534, to the last digit
    assert isinstance(cost, Decimal)
    tenth = compute_cost(Usage(prompt_tokens=3), _priced("0.1", "0"))
    assert tenth == Decimal("0.3")  # where floats give 0.30000000000000004
    assert 3 * 0.1 != 0.3


def test_compute_cost_with_bundled_prices() -> None:
    mini = next(m for m in bundled_models() if m.id == "openai/gpt-4o-mini")
    usage = Usage(prompt_tokens=1000, completion_tokens=500)
    assert compute_cost(usage, mini) == Decimal("0.00045")  # 1000 * 0.15e-6 + 500 * 0.6e-6
    assert compute_cost(Usage(), mini) == 0


def test_effective_cost_prefers_the_reported_figure() -> None:
    priced = _priced("0.000001", "0.000002")
    reported = Usage(prompt_tokens=10, completion_tokens=10, cost=Decimal("0.5"))
    assert effective_cost(reported, priced) == Decimal("0.5")
    unreported = Usage(prompt_tokens=10, completion_tokens=10)
    assert effective_cost(unreported, priced) == Decimal("0.00003")
    assert effective_cost(unreported, None) is None


def test_usage_from_an_openrouter_payload() -> None:
    usage = Usage.from_payload(
        {
            "prompt_tokens": 194,
            "completion_tokens": 2,
            "total_tokens": 196,
            "cost": 0.00000970,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 128, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 1},
        }
    )
    assert usage == Usage(
        prompt_tokens=194,
        completion_tokens=2,
        cached_tokens=128,
        reasoning_tokens=1,
        cost=Decimal("0.0000097"),
    )


def test_usage_from_a_sparse_payload() -> None:
    assert Usage.from_payload(None) == Usage()
    assert Usage.from_payload(
        {"prompt_tokens": 5, "prompt_tokens_details": None, "completion_tokens_details": None}
    ) == Usage(prompt_tokens=5)
    assert Usage.from_payload({"prompt_tokens": True, "completion_tokens": -3}) == Usage()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0.000123, Decimal("0.000123")),
        (1.5e-07, Decimal("1.5E-7")),
        ("0.0042", Decimal("0.0042")),
        (0, Decimal(0)),
        (None, None),
        (True, None),
        (-0.1, None),
        ("NaN", None),
        ("not a number", None),
        (float("inf"), None),
    ],
)
def test_parse_cost(raw: object, expected: Decimal | None) -> None:
    assert parse_cost(raw) == expected


CHAIN = ["openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4"]


@pytest.mark.parametrize(
    ("answered", "expected"),
    [
        ("openai/gpt-4o-mini", "openai/gpt-4o-mini"),
        ("openai/gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),  # a dated version
        ("openai/gpt-4o-2024-08-06", "openai/gpt-4o"),
        ("openai/gpt-4o:extended", "openai/gpt-4o"),  # a variant
        ("gpt-4o-mini", "openai/gpt-4o-mini"),  # servers other than OpenRouter: no vendor
        ("gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
        ("anthropic/claude-4-sonnet-20250522", None),  # a canonical slug: not recognisable
        ("openai/gpt-4", None),
        ("openai/gpt-4o-minimal", None),
    ],
)
def test_an_answering_model_name_maps_to_the_chain_model_it_is_a_version_of(
    answered: str, expected: str | None
) -> None:
    assert chain_model(answered, CHAIN) == expected


def test_the_dearest_model_for_a_usage_depends_on_its_mix() -> None:
    prompt_heavy, reply_heavy = _priced("0.00001", "0.000001"), _priced("0.000001", "0.00001")
    models = [prompt_heavy, reply_heavy]
    assert dearest_for(Usage(prompt_tokens=1000, completion_tokens=10), models) is prompt_heavy
    assert dearest_for(Usage(prompt_tokens=10, completion_tokens=1000), models) is reply_heavy
    assert dearest_for(Usage(prompt_tokens=1), []) is None
