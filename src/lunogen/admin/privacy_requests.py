"""Privacy requests: objections, questions about one's data, correction requests.

A person files one (`create_request`) and follows it; the support console handles it
(`handle_request`: status and a written response). Filing and every status change tell the
person in the app and by email; the email carries the response. The body and the response are
AES-GCM ciphertext. A person reaches only their own requests (another's id is 404); the console
functions are called only behind the support-or-admin check.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Literal

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.admin.letters import tell
from lunogen.admin.models import PrivacyRequest
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.config import Settings
from lunogen.errors import ConflictError, NotFoundError, ValidationFailedError
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow

RequestKind = Literal["objection", "access_question", "correction", "other"]
RequestStatus = Literal["received", "in_progress", "answered", "closed"]
KINDS: tuple[RequestKind, ...] = ("objection", "access_question", "correction", "other")
STATUSES: tuple[RequestStatus, ...] = ("received", "in_progress", "answered", "closed")
KIND_WORDS = {
    "objection": "Objection to a use of my data",
    "access_question": "Question about my data",
    "correction": "Correction of my data",
    "other": "Other privacy matter",
}
STATUS_WORDS = {
    "received": "received",
    "in_progress": "in progress",
    "answered": "answered",
    "closed": "closed",
}


def privacy_contact(settings: Settings) -> str:
    """The address people write to about privacy: `LUNOGEN_PRIVACY_CONTACT`, else the address
    of `mail_from` (without its display name)."""
    return settings.privacy_contact or parseaddr(settings.mail_from)[1] or settings.mail_from


def _not_found() -> NotFoundError:
    return NotFoundError(error="Privacy request not found")


def _path(row: PrivacyRequest) -> str:
    return f"/privacy-requests/{row.id}"


async def create_request(
    session: AsyncSession, effects: Effects, *, principal: Principal, kind: RequestKind, body: str
) -> PrivacyRequest:
    """File a request (status `received`); audited, and the person gets a receipt."""
    row = PrivacyRequest(
        user_id=principal.user.id,
        kind=kind,
        body=effects.keyring.encrypt(body),
        status="received",
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        action="privacy.request_filed",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="privacy_request",
        target_id=row.id,
        details={"kind": kind},
    )
    await tell(
        session,
        effects,
        user=principal.user,
        kind="privacy.request",
        title="We received your privacy request",
        note=(
            f"We received your privacy request ({KIND_WORDS[kind].lower()}). We will email you "
            "whenever its status changes."
        ),
        path=_path(row),
    )
    return row


async def _page(
    session: AsyncSession, query: Select[PrivacyRequest], *, limit: int, offset: int
) -> tuple[list[PrivacyRequest], int]:
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    rows = await session.execute(
        query.order_by(PrivacyRequest.created_at.desc(), PrivacyRequest.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), total


async def list_own_requests(
    session: AsyncSession, *, user_id: str, limit: int, offset: int
) -> tuple[list[PrivacyRequest], int]:
    """The person's requests, newest first, and the total."""
    query = select(PrivacyRequest).where(PrivacyRequest.user_id == user_id)
    return await _page(session, query, limit=limit, offset=offset)


async def get_own_request(
    session: AsyncSession, *, user_id: str, request_id: str
) -> PrivacyRequest:
    row = await session.get(PrivacyRequest, request_id) if len(request_id) <= 36 else None
    if row is None or row.user_id != user_id:
        raise _not_found()
    return row


async def list_requests(
    session: AsyncSession,
    *,
    status: RequestStatus | None,
    kind: RequestKind | None,
    limit: int,
    offset: int,
) -> tuple[list[PrivacyRequest], int]:
    """Every request for the console, newest first, filtered by status and kind."""
    query = select(PrivacyRequest)
    if status is not None:
        query = query.where(PrivacyRequest.status == status)
    if kind is not None:
        query = query.where(PrivacyRequest.kind == kind)
    return await _page(session, query, limit=limit, offset=offset)


async def get_any_request(session: AsyncSession, *, request_id: str) -> PrivacyRequest:
    row = await session.get(PrivacyRequest, request_id) if len(request_id) <= 36 else None
    if row is None:
        raise _not_found()
    return row


async def handle_request(
    session: AsyncSession,
    effects: Effects,
    *,
    principal: Principal,
    row: PrivacyRequest,
    status: RequestStatus,
    response: str | None,
) -> PrivacyRequest:
    """Move the request to `status`, with a written response (required for `answered`, kept
    when not given). The person is notified and emailed the status and the response. Audited
    (`privacy.request_handled`). 409 when neither the status nor the response changes."""
    if status == "answered" and not (response or row.response):
        raise ValidationFailedError("An answered request needs a response", field="response")
    new_response = effects.keyring.encrypt(response) if response else None
    if status == row.status and new_response is None:
        raise ConflictError(f"The request is already {STATUS_WORDS[status]}: nothing changed")
    owner = await session.get(User, row.user_id)
    if owner is None:  # the row goes with its owner (ON DELETE CASCADE)
        raise _not_found()
    previous = row.status
    row.status = status
    if new_response is not None:
        row.response = new_response
    row.handled_by = principal.user.id
    row.updated_at = utcnow()
    await session.flush()
    audit.record(
        session,
        action="privacy.request_handled",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        subject_user_id=row.user_id,
        client=principal.client,
        target_type="privacy_request",
        target_id=row.id,
        details={"from": previous, "to": status, "responded": response is not None},
    )
    word = STATUS_WORDS[status]
    note = f"Your privacy request ({KIND_WORDS[row.kind].lower()}) is now {word}."
    if response:
        note += " Our response:"
    await tell(
        session,
        effects,
        user=owner,
        kind="privacy.request",
        title=f"Your privacy request is {word}",
        note=note,
        path=_path(row),
        text=response,
    )
    return row
