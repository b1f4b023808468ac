from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from lunogen.account.plans import PlanName
from lunogen.account.roles import Role

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsentIn(StrictModel):
    age_confirmed: bool = Field(description="I confirm I am 18 or older")
    accept_terms: bool = Field(description="I accept the current Terms of Service")
    accept_privacy: bool = Field(description="I accept the current Privacy Policy")


class RegisterIn(ConsentIn):
    name: Name
    email: EmailStr
    password: str = Field(max_length=256)


def _local_path(value: str) -> str:
    """A path on this site: `/…`, never `//host` or `/\\host` (browsers read those as hosts)."""
    if (
        not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise ValueError("must be a path on this site, such as /agents")
    return value


class LoginIn(StrictModel):
    email: EmailStr
    password: str = Field(max_length=256)
    # Browser forms only: the dashboard page to return to (a path on this site).
    next: Annotated[str, AfterValidator(_local_path)] | None = Field(default=None, max_length=300)


class EmailIn(StrictModel):
    email: EmailStr


class TokenIn(StrictModel):
    token: str = Field(min_length=10, max_length=200)


class PasswordResetIn(TokenIn):
    password: str = Field(max_length=256)


class PasswordChangeIn(StrictModel):
    current_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    name: str
    role: Role
    plan: PlanName
    email_verified: bool
    google_linked: bool
    picture_url: str | None
    setup_complete: bool
    created_at: datetime


class PlanLimitsOut(BaseModel):
    api_keys: int
    requests_per_minute: int
    agents: int
    channels_per_agent: int


class MeOut(UserOut):
    limits: PlanLimitsOut


class ProfileIn(StrictModel):
    name: Name


class EmailChangeIn(StrictModel):
    new_email: EmailStr = Field(description="The address to use from now on")
    password: str | None = Field(
        default=None,
        max_length=256,
        description="Your current password. Accounts without one (Google only) leave it out "
        "and must have signed in in a browser within the last 10 minutes.",
    )


class EmailChangeOut(BaseModel):
    message: str
    pending_email: str = Field(description="Where the confirmation link was sent")
    expires_at: datetime = Field(description="When the link stops working")


class EmailStatusOut(BaseModel):
    email: str
    pending_email: str | None = Field(description="An address waiting for its link to be opened")
    pending_expires_at: datetime | None


class MessageOut(BaseModel):
    message: str


class RoleChangeIn(StrictModel):
    role: Role | None = None
    plan: PlanName | None = None
