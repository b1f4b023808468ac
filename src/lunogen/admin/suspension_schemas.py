"""The admin API's bodies for suspensions and for agents across tenants (not the ORM rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(
        description="Why, in 1-500 characters: shown to the owner and kept in the audit log."
    )


class AccountSuspensionOut(BaseModel):
    user_id: str
    email: str
    suspended: bool
    suspended_at: datetime | None
    suspended_reason: str | None
    stopped_agents: list[str] = Field(
        default_factory=list, description="Ids of the agents this suspension stopped."
    )


class AdminAgentOut(BaseModel):
    id: str
    name: str
    owner_id: str
    owner_email: str
    status: str
    status_changed_at: datetime
    suspended_at: datetime | None
    suspended_reason: str | None
    created_at: datetime


class QueueOut(BaseModel):
    name: str
    description: str
    pending: int = Field(description="Rows waiting for a job or being worked on.")
    failed: int = Field(description="Rows that gave up after their retries.")


class SystemHealthOut(BaseModel):
    status: str = Field(description="`ok`, or `degraded` when anything below needs a look.")
    database: str
    redis: str = Field(description="`ok`, `not configured`, or the error.")
    job_broker: str
    sandbox_backend: str | None
    sandbox_problem: str | None
    queues: list[QueueOut]
