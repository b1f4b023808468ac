"""Credit units. People see credits; the ledger stores integer micro-credits (1e-6 credit).

Conversions are exact (`Fraction`, never floats). Charges round up, so rounding never
undercharges a model call; credits bought for money round down, so rounding never gives away
credits that were not paid for.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

MICRO_PER_CREDIT = 1_000_000
NANO_PER_USD = 1_000_000_000
CENTS_PER_USD = 100


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)


def _floor(value: Fraction) -> int:
    return value.numerator // value.denominator


def _exact(value: Decimal | int, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{name} must be an int or a Decimal, not {type(value).__name__}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"{name} must be a finite number")
    return Fraction(value)


def _price(usd_per_credit: Decimal) -> Fraction:
    price = _exact(usd_per_credit, "usd_per_credit")
    if price <= 0:
        raise ValueError("usd_per_credit must be positive")
    return price


def nano_usd_to_micro_credits(
    nano_usd: int, *, usd_per_credit: Decimal, markup_percent: int
) -> int:
    """What a provider cost of `nano_usd` (1e-9 USD) costs in micro-credits, rounded up."""
    if isinstance(nano_usd, bool) or not isinstance(nano_usd, int):
        raise TypeError("nano_usd must be an int")
    if nano_usd < 0:
        raise ValueError("nano_usd must not be negative")
    if isinstance(markup_percent, bool) or not isinstance(markup_percent, int):
        raise TypeError("markup_percent must be an int")
    if markup_percent < 0:
        raise ValueError("markup_percent must not be negative")
    usd = Fraction(nano_usd, NANO_PER_USD) * Fraction(100 + markup_percent, 100)
    return _ceil(usd / _price(usd_per_credit) * MICRO_PER_CREDIT)


def credits_to_micro(credits: Decimal | int) -> int:
    """Exact: a value with more than six decimal places is refused, never rounded."""
    micro = _exact(credits, "credits") * MICRO_PER_CREDIT
    if micro.denominator != 1:
        raise ValueError("credits have at most six decimal places")
    return micro.numerator


def micro_to_credits_str(micro: int) -> str:
    """The exact decimal text of `micro` micro-credits: 12_500_000 -> "12.5", 1 -> "0.000001"."""
    if isinstance(micro, bool) or not isinstance(micro, int):
        raise TypeError("micro must be an int")
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO_PER_CREDIT)
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:06d}".rstrip("0")


def usd_cents_for_credits(credits: Decimal | int, *, usd_per_credit: Decimal) -> int:
    """The price in US cents of buying `credits`, rounded up to a whole cent."""
    amount = _exact(credits, "credits")
    if amount <= 0:
        raise ValueError("credits must be positive")
    return _ceil(amount * _price(usd_per_credit) * CENTS_PER_USD)


def micro_credits_for_usd_cents(cents: int, *, usd_per_credit: Decimal) -> int:
    """The micro-credits that `cents` US cents buy, rounded down (a paid top-up's amount)."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError("cents must be an int")
    if cents < 0:
        raise ValueError("cents must not be negative")
    return _floor(Fraction(cents, CENTS_PER_USD) / _price(usd_per_credit) * MICRO_PER_CREDIT)
