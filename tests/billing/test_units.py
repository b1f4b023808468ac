"""Credit units are exact: charges round up, bought credits round down, text is exact."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunogen.billing.units import (
    MICRO_PER_CREDIT,
    credits_to_micro,
    micro_credits_for_usd_cents,
    micro_to_credits_str,
    nano_usd_to_micro_credits,
    usd_cents_for_credits,
)

CENT = Decimal("0.01")
prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10), places=4)
markups = st.integers(min_value=0, max_value=500)
costs = st.integers(min_value=0, max_value=10**15)


def test_default_price_examples() -> None:
    # One credit is one cent: a $0.0123 call costs 1.23 credits.
    assert nano_usd_to_micro_credits(12_300_000, usd_per_credit=CENT, markup_percent=0) == 1_230_000
    # A 20% markup: 1.476 credits.
    assert (
        nano_usd_to_micro_credits(12_300_000, usd_per_credit=CENT, markup_percent=20) == 1_476_000
    )
    # One nano-dollar is 1e-7 credit: a fraction of a micro-credit, charged as one.
    assert nano_usd_to_micro_credits(1, usd_per_credit=CENT, markup_percent=0) == 1
    assert nano_usd_to_micro_credits(0, usd_per_credit=CENT, markup_percent=50) == 0
    # A micro-credit is 10 nano-dollars at this price: exact amounts are not rounded up.
    assert nano_usd_to_micro_credits(10, usd_per_credit=CENT, markup_percent=0) == 1
    assert nano_usd_to_micro_credits(11, usd_per_credit=CENT, markup_percent=0) == 2


@given(costs, prices, markups)
def test_charge_is_the_smallest_whole_micro_credit_that_covers_the_cost(
    nano_usd: int, price: Decimal, markup: int
) -> None:
    micro = nano_usd_to_micro_credits(nano_usd, usd_per_credit=price, markup_percent=markup)
    owed_usd = Fraction(nano_usd, 10**9) * Fraction(100 + markup, 100)
    charged_usd = Fraction(micro, MICRO_PER_CREDIT) * Fraction(price)
    assert charged_usd >= owed_usd  # never undercharged
    assert charged_usd - Fraction(price) / MICRO_PER_CREDIT < owed_usd  # by less than 1 micro


@given(costs, costs, prices, markups)
def test_charges_grow_with_cost(a: int, b: int, price: Decimal, markup: int) -> None:
    low, high = sorted((a, b))
    charge = lambda n: nano_usd_to_micro_credits(n, usd_per_credit=price, markup_percent=markup)  # noqa: E731
    assert charge(low) <= charge(high)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"nano_usd": -1, "usd_per_credit": CENT, "markup_percent": 0}, ValueError),
        ({"nano_usd": 1, "usd_per_credit": Decimal(0), "markup_percent": 0}, ValueError),
        ({"nano_usd": 1, "usd_per_credit": Decimal("-0.01"), "markup_percent": 0}, ValueError),
        ({"nano_usd": 1, "usd_per_credit": Decimal("NaN"), "markup_percent": 0}, ValueError),
        ({"nano_usd": 1, "usd_per_credit": CENT, "markup_percent": -5}, ValueError),
        ({"nano_usd": 1.5, "usd_per_credit": CENT, "markup_percent": 0}, TypeError),
        ({"nano_usd": True, "usd_per_credit": CENT, "markup_percent": 0}, TypeError),
        ({"nano_usd": 1, "usd_per_credit": 0.01, "markup_percent": 0}, TypeError),
    ],
)
def test_bad_charge_inputs_are_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        nano_usd_to_micro_credits(**kwargs)


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0"),
        (1, "0.000001"),
        (12_500_000, "12.5"),
        (12_000_000, "12"),
        (-500_000, "-0.5"),
        (-1, "-0.000001"),
        (10_000_010, "10.00001"),
        (123_456_789_012, "123456.789012"),
    ],
)
def test_micro_to_credits_str(micro: int, text: str) -> None:
    assert micro_to_credits_str(micro) == text


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_text_round_trips_exactly(micro: int) -> None:
    text = micro_to_credits_str(micro)
    assert credits_to_micro(Decimal(text)) == micro
    assert "e" not in text.lower()
    assert not text.endswith((".", "0")) or "." not in text


def test_credits_to_micro() -> None:
    assert credits_to_micro(10) == 10_000_000
    assert credits_to_micro(Decimal("0.000001")) == 1
    assert credits_to_micro(Decimal("-2.5")) == -2_500_000
    assert credits_to_micro(Decimal("1.2300000")) == 1_230_000
    with pytest.raises(ValueError, match="six decimal places"):
        credits_to_micro(Decimal("0.0000001"))
    with pytest.raises(ValueError, match="finite"):
        credits_to_micro(Decimal("Infinity"))
    with pytest.raises(TypeError):
        credits_to_micro(1.5)
    with pytest.raises(TypeError):
        credits_to_micro("5")


def test_top_up_prices() -> None:
    assert usd_cents_for_credits(500, usd_per_credit=CENT) == 500
    assert usd_cents_for_credits(Decimal("0.5"), usd_per_credit=CENT) == 1  # rounded up
    assert usd_cents_for_credits(1000, usd_per_credit=Decimal("0.0125")) == 1250
    assert micro_credits_for_usd_cents(500, usd_per_credit=CENT) == 500_000_000
    assert micro_credits_for_usd_cents(1, usd_per_credit=Decimal("0.03")) == 333_333  # down
    with pytest.raises(ValueError):
        usd_cents_for_credits(0, usd_per_credit=CENT)
    with pytest.raises(ValueError):
        micro_credits_for_usd_cents(-1, usd_per_credit=CENT)


@given(st.integers(min_value=1, max_value=10**9), prices)
def test_credits_bought_for_their_price_are_at_least_those_credits(
    credits: int, price: Decimal
) -> None:
    cents = usd_cents_for_credits(credits, usd_per_credit=price)
    assert micro_credits_for_usd_cents(cents, usd_per_credit=price) >= credits * MICRO_PER_CREDIT
    # ...and a cent less would not have bought them.
    assert micro_credits_for_usd_cents(cents - 1, usd_per_credit=price) < credits * MICRO_PER_CREDIT
