"""API shapes of spend caps. Credits travel as exact decimal strings; null means no cap."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from lunogen.billing.caps import MAX_REPLY_CHARS, MAX_TURN_TOKENS
from lunogen.billing.schemas import _exact_credits

CapCredits = Annotated[
    Decimal | None,
    Field(ge=0, description="Credits (up to six decimal places); null for no cap"),
    AfterValidator(lambda value: None if value is None else _exact_credits(value)),
]


class AgentCapsIn(BaseModel):
    """Every field; one left out or null is no cap (the reply: the default text)."""

    model_config = ConfigDict(extra="forbid")

    daily_credits: CapCredits = None
    monthly_credits: CapCredits = None
    turn_credits: CapCredits = None
    turn_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TURN_TOKENS, description="Tokens one turn may use"
    )
    reply_text: str | None = Field(
        default=None,
        max_length=MAX_REPLY_CHARS,
        description="What a contact is told when a cap stops the agent; null for the default",
    )

    @field_validator("reply_text")
    @classmethod
    def _reply(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be empty (send null for the default reply)")
        return value


class AccountCapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    monthly_credits: CapCredits = None


class PeriodOut(BaseModel):
    period: str = Field(description='The UTC day ("2026-12-07") or month ("2026-12")')
    spent: str = Field(description="Credits charged in the period")
    held: str = Field(description="Credits held by calls in progress")
    cap: str | None = Field(description="The cap, or null")
    percent: int | None = Field(description="(spent + held) as a percentage of the cap")


class AgentCapsOut(BaseModel):
    agent_id: str
    daily_credits: str | None
    monthly_credits: str | None
    turn_credits: str | None
    turn_tokens: int | None
    reply_text: str | None = Field(description="Your over-cap reply; null: the default")
    effective_reply_text: str = Field(description="What contacts get when a cap stops the agent")
    today: PeriodOut
    this_month: PeriodOut


class AccountCapOut(BaseModel):
    monthly_credits: str | None
    this_month: PeriodOut
