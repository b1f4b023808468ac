"""API shapes of support tickets, content grants, privacy requests and the console's views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from lunogen.admin.models import ContentGrant, PrivacyRequest, Ticket, TicketMessage
from lunogen.admin.privacy_requests import RequestKind, RequestStatus
from lunogen.admin.tickets import MAX_GRANT_HOURS, TicketStatus
from lunogen.kit.crypto import KeyRing

MAX_BODY = 10_000

Subject = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Body = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BODY)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TicketCreate(StrictModel):
    subject: Subject = Field(description="A short summary; keep personal details in the body.")
    body: Body = Field(description="What happened, what you expected; at most 10,000 characters.")


class TicketReply(StrictModel):
    body: Body


class StaffReply(StrictModel):
    body: Body
    status: TicketStatus = Field(
        default="waiting", description="The ticket's status after the reply (default: waiting)."
    )


class GrantIn(StrictModel):
    hours: int = Field(
        ge=1,
        le=MAX_GRANT_HOURS,
        description="For how many hours support may read your conversations (1 to 72).",
    )


class AssignIn(StrictModel):
    assignee_id: str | None = Field(
        max_length=36, description="A support or admin member's id; null unassigns."
    )


class StatusIn(StrictModel):
    status: TicketStatus


class GrantOut(BaseModel):
    id: str
    granted_at: datetime
    expires_at: datetime


class TicketMessageOut(BaseModel):
    id: str
    author: str = Field(description="`user` (the ticket's owner) or `staff`.")
    body: str
    created_at: datetime


class TicketOut(BaseModel):
    id: str
    subject: str
    status: TicketStatus
    created_at: datetime
    updated_at: datetime


class StaffTicketOut(TicketOut):
    user_id: str
    assignee_id: str | None


class TicketDetail(TicketOut):
    messages: list[TicketMessageOut]
    grant: GrantOut | None = Field(description="The live content grant, if any.")


class StaffTicketDetail(StaffTicketOut):
    messages: list[TicketMessageOut]
    grant: GrantOut | None


class PrivacyRequestIn(StrictModel):
    kind: RequestKind
    body: Body


class PrivacyRequestHandle(StrictModel):
    status: RequestStatus
    response: Body | None = Field(
        default=None, description="The answer emailed to the person (required for `answered`)."
    )


class PrivacyRequestOut(BaseModel):
    id: str
    kind: RequestKind
    status: RequestStatus
    body: str
    response: str | None
    created_at: datetime
    updated_at: datetime


class StaffPrivacyRequestOut(PrivacyRequestOut):
    user_id: str
    handled_by: str | None


def grant_out(grant: ContentGrant | None) -> GrantOut | None:
    if grant is None:
        return None
    return GrantOut(id=grant.id, granted_at=grant.granted_at, expires_at=grant.expires_at)


def message_out(message: TicketMessage, keyring: KeyRing) -> TicketMessageOut:
    return TicketMessageOut(
        id=message.id,
        author=message.author_role,
        body=keyring.decrypt(message.body),
        created_at=message.created_at,
    )


def ticket_fields(ticket: Ticket) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
    }


def request_fields(row: PrivacyRequest, keyring: KeyRing) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "body": keyring.decrypt(row.body),
        "response": keyring.decrypt(row.response) if row.response else None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
