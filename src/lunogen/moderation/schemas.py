"""The moderation API's bodies (not the ORM rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from lunogen.moderation.models import ModerationCheck, ModerationRule
from lunogen.moderation.service import FlagRow

Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["term", "pattern"] = Field(
        description="`term`: a word or phrase, matched case-insensitively as whole words; "
        "`pattern`: a Python regular expression (at most 200 characters, no back-references, "
        "no quantifier inside a repeated group)."
    )
    value: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    direction: Literal["inbound", "outbound", "both"] = Field(
        description="Which messages it checks: what people send to agents, agents' replies, or "
        "both."
    )
    action: Literal["flag", "block"] = Field(
        description="`flag`: the message goes through and a flag is queued for review; "
        "`block`: an inbound message is kept but not answered, a reply is withheld (replaced by "
        "a short notice). Both count toward the suspension threshold."
    )
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""


class RuleOut(BaseModel):
    id: str
    kind: str
    value: str
    direction: str
    action: str
    note: str
    created_at: datetime

    @classmethod
    def of(cls, rule: ModerationRule) -> RuleOut:
        return cls(
            id=rule.id,
            kind=rule.kind,
            value=rule.value,
            direction=rule.direction,
            action=rule.action,
            note=rule.note,
            created_at=rule.created_at,
        )


class FlagOut(BaseModel):
    id: str
    agent_id: str
    agent_name: str
    owner_id: str
    owner_email: str
    message_id: str
    direction: str
    source: str = Field(description="`rule` (see `rule`) or `classifier`.")
    rule: str | None
    action: str = Field(description="`flag` or `block` (a blocked message or withheld reply).")
    categories: list[str]
    scores: dict[str, float]
    status: str = Field(description="`open`, `dismissed` or `upheld`.")
    reviewer_id: str | None
    reviewed_at: datetime | None
    review_note: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: FlagRow) -> FlagOut:
        flag = row.flag
        return cls(
            id=flag.id,
            agent_id=flag.agent_id,
            agent_name=row.agent_name,
            owner_id=flag.owner_id,
            owner_email=row.owner_email,
            message_id=flag.message_id,
            direction=flag.direction,
            source=flag.source,
            rule=flag.rule,
            action=flag.action,
            categories=list(flag.categories),
            scores=dict(flag.scores),
            status=flag.status,
            reviewer_id=flag.reviewer_id,
            reviewed_at=flag.reviewed_at,
            review_note=flag.review_note,
            created_at=flag.created_at,
        )


class FlagDetail(FlagOut):
    evidence: str = Field(description="The flagged text (reading it is audited).")


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Note = ""


class CheckOut(BaseModel):
    id: str
    agent_id: str
    message_id: str
    direction: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime

    @classmethod
    def of(cls, check: ModerationCheck) -> CheckOut:
        return cls(
            id=check.id,
            agent_id=check.agent_id,
            message_id=check.message_id,
            direction=check.direction,
            status=check.status,
            attempts=check.attempts,
            last_error=check.last_error,
            created_at=check.created_at,
        )


class ChecksOut(BaseModel):
    counts: dict[str, int] = Field(
        description="Checks by status: queued, checked, flagged, failed."
    )
    failed: list[CheckOut] = Field(description="The latest checks that gave up, newest first.")


class AppealIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]


class AppealOut(BaseModel):
    ticket_id: str
