"""The Terms and the Privacy Policy over the API: read (public), accept, publish (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field, StringConstraints
from starlette.responses import Response

from lunogen.auth.dependencies import SetupUser
from lunogen.db import DbSession
from lunogen.errors import ForbiddenError
from lunogen.kit.forms import is_form
from lunogen.privacy import documents
from lunogen.privacy import policy_notice as _policy_notice  # noqa: F401  job and sweep
from lunogen.privacy.documents import MAX_TEXT_CHARS, Document
from lunogen.privacy.policy import KINDS

router = APIRouter(prefix="/api/v1/policies", tags=["policies"])

Kind = Literal["terms", "privacy"]


class PolicyVersionOut(BaseModel):
    kind: Kind
    version: str
    title: str
    effective_at: datetime
    in_effect: bool
    material: bool
    summary: str
    published_at: datetime
    url: str = Field(description="Where a person reads it.")


class PolicyTextOut(PolicyVersionOut):
    text: str = Field(description="The document as Markdown; promises carry `[tags]`.")


class PolicyStateOut(BaseModel):
    current: PolicyVersionOut
    upcoming: list[PolicyVersionOut]


class PoliciesOut(BaseModel):
    terms: PolicyStateOut
    privacy: PolicyStateOut


class PolicyPublishIn(BaseModel):
    kind: Kind
    effective: Annotated[str, StringConstraints(min_length=10, max_length=40)] = Field(
        description="YYYY-MM-DD (from the start of that day, UTC) or an ISO 8601 date and time "
        "with its offset. A material change must take effect in the future."
    )
    material: bool = Field(
        default=False,
        description="A material change: every active user is told in-app and by email, and "
        "must accept it (continued use after the effective date counts as accepting).",
    )
    version: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = Field(
        default=None, description="Defaults to the effective date (YYYY-MM-DD)."
    )
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
    summary: Annotated[str, StringConstraints(max_length=2000)] = Field(
        default="",
        description="What changes, for the notice; by default the changed section headings.",
    )


class AcceptedOut(BaseModel):
    accepted: dict[str, str] = Field(description="The versions recorded now, by kind.")


def policy_version_out(document: Document) -> PolicyVersionOut:
    return PolicyVersionOut(
        kind=document.kind,
        version=document.version,
        title=document.title,
        effective_at=document.effective_at,
        in_effect=document.in_effect(),
        material=document.material,
        summary=document.summary,
        published_at=document.published_at,
        url=f"/{document.kind}/versions/{document.version}",
    )


@router.get("", response_model=PoliciesOut)
async def list_policies(db: DbSession) -> PoliciesOut:
    """The version of the Terms and of the Privacy Policy in effect now, and any published
    version that takes effect later. Public: no credentials needed."""
    states: dict[str, PolicyStateOut] = {}
    for kind in KINDS:
        current, upcoming = await documents.current_and_upcoming(db, kind=kind)
        states[kind] = PolicyStateOut(
            current=policy_version_out(current), upcoming=[policy_version_out(d) for d in upcoming]
        )
    return PoliciesOut(**states)


@router.get("/{kind}/{version}", response_model=PolicyTextOut)
async def get_policy_version(
    kind: Kind,
    version: Annotated[str, Path(max_length=40)],
    db: DbSession,
) -> PolicyTextOut:
    """One version of a document with its full text. Public; 404 for an unknown version."""
    document = await documents.get_version(db, kind=kind, version=version)
    return PolicyTextOut(**policy_version_out(document).model_dump(), text=document.text)


@router.post("/accept", response_model=AcceptedOut)
async def accept_policies(request: Request, principal: SetupUser, db: DbSession) -> Response:
    """Accept the versions in effect of the changed documents you have not accepted yet (the
    notice shown at sign-in after a material change). Records the version, time, IP and user
    agent. A browser form is answered with a redirect home. Only a signed-in person, not an API
    key (an API call after the effective date records acceptance by itself)."""
    if principal.api_key is not None:
        raise ForbiddenError("Acceptance is given by the person, in a signed-in browser session")
    if principal.user.age_attested_at is None or principal.user.terms_version is None:
        raise ForbiddenError(
            "Give your first consent at /onboarding (POST /api/v1/auth/consent)",
            error="Account setup incomplete",
        )
    due = tuple(documents.due_documents(principal.user))  # what the notice shows
    recorded = await documents.accept_versions(
        db, user=principal.user, client=principal.client, how="notice", kinds=due
    )
    if is_form(request):
        return RedirectResponse("/home", status_code=303)
    return JSONResponse(AcceptedOut(accepted=dict(recorded)).model_dump(mode="json"))
