"""API shapes of the billing endpoints. Credits travel as exact decimal strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lunogen.billing.units import credits_to_micro

CREDITS_EXAMPLE = ["12.5"]
MAX_CREDITS = Decimal(1_000_000_000)


def _exact_credits(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number of credits")
    try:
        credits_to_micro(value)
    except ValueError:
        raise ValueError("credits have at most six decimal places") from None
    if abs(value) > MAX_CREDITS:
        raise ValueError(f"must be at most {MAX_CREDITS} credits")
    return value


class CreditPack(BaseModel):
    name: str
    credits: int
    price_minor: int = Field(description="The price in minor units of `currency` (cents)")


class BillingOut(BaseModel):
    balance: str = Field(description="Credits on the account", examples=CREDITS_EXAMPLE)
    held: str = Field(description="Credits reserved for model calls in progress")
    available: str = Field(description="balance - held: what new calls can use")
    plan: str
    low_credit_threshold: str = Field(description="Alert when available falls to this")
    currency: str
    packs: list[CreditPack]
    custom_credits_min: int
    custom_credits_max: int
    pro_available: bool = Field(description="Whether the Pro plan can be bought here")


class BillingSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low_credit_threshold: Decimal = Field(ge=0, le=1_000_000, description="In credits")

    @field_validator("low_credit_threshold")
    @classmethod
    def _exact(cls, value: Decimal) -> Decimal:
        return _exact_credits(value)


class TransactionOut(BaseModel):
    id: int
    created_at: datetime
    kind: str
    amount: str = Field(description="Credits added (positive) or taken (negative)")
    held_change: str = Field(description="Change of the reserved credits (holds only)")
    balance_after: str
    reference: str | None
    description: str


class TransactionPage(BaseModel):
    data: list[TransactionOut]
    next_before_id: int | None = Field(
        description="Pass as `before_id` for the next (older) page; null on the last page"
    )


class CheckoutIn(BaseModel):
    """Exactly one of `pack`, `credits` or `plan`."""

    model_config = ConfigDict(extra="forbid")

    pack: str | None = Field(default=None, max_length=50, description="A configured pack name")
    credits: int | None = Field(default=None, description="A custom number of whole credits")
    plan: Literal["pro"] | None = Field(default=None, description="Subscribe to the Pro plan")


class CheckoutOut(BaseModel):
    url: str = Field(description="Stripe's hosted checkout page: send the customer there")
    session_id: str


class AdminCreditsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credits: Decimal = Field(description="Credits to add; negative to take away; not zero")
    reason: str = Field(min_length=1, max_length=400, description="Why (kept in the audit log)")

    @field_validator("credits")
    @classmethod
    def _exact(cls, value: Decimal) -> Decimal:
        value = _exact_credits(value)
        if value == 0:
            raise ValueError("must not be zero")
        return value

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class AdminCreditsOut(BaseModel):
    user_id: str
    transaction: TransactionOut
    balance: str
    available: str
