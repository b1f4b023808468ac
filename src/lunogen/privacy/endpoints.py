"""Account deletion and its cancellation over the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StringConstraints, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.service import normalize_email
from lunogen.auth.dependencies import SetupFullAccess
from lunogen.auth.ratelimit import Backoff, RateLimiter
from lunogen.config import Settings
from lunogen.db import DbSession
from lunogen.errors import TooManyRequestsError, ValidationFailedError
from lunogen.kit.effects import Effects
from lunogen.kit.web import ClientInfo
from lunogen.privacy import deletion

router = APIRouter(prefix="/api/v1", tags=["account"])


class AccountDeleteIn(BaseModel):
    password: Annotated[str, StringConstraints(max_length=1000)] | None = Field(
        default=None,
        description="Your current password. Accounts without one (Google only) leave it out "
        "and must have signed in within the last 10 minutes.",
    )


class AccountDeleted(BaseModel):
    message: str
    purge_after: datetime = Field(description="When the account's data will be purged.")


class AccountRestoreIn(BaseModel):
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    password: Annotated[str, StringConstraints(max_length=1000)] | None = None
    token: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None, description="The token of the link emailed at deletion."
    )

    @model_validator(mode="after")
    def one_way(self) -> AccountRestoreIn:
        if self.token is None and (not self.email or not self.password):
            raise ValueError("give either token, or email and password")
        return self


class AccountRestored(BaseModel):
    message: str


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post("/account/delete", response_model=AccountDeleted)
async def delete_account(
    data: AccountDeleteIn, request: Request, principal: SetupFullAccess, db: DbSession
) -> AccountDeleted:
    """Delete your account. Every session and API key stops working at once, every agent
    stops, a Pro subscription is cancelled, and all your data is purged after
    LUNOGEN_PURGE_AFTER_DAYS (30 at most); until then `POST /api/v1/account/restore` (or the
    sign-in page) cancels the deletion. Scope: full access; audited. 400 on a wrong password,
    403 for a Google-only account not signed in within 10 minutes."""
    await db.commit()  # end the authenticator's transaction before argon2 runs
    effects = Effects(settings=_settings(request), keyring=request.app.state.keyring)
    purge_on = await deletion.delete_account(
        db, principal=principal, password=data.password, effects=effects
    )
    return AccountDeleted(
        message="Your account is deleted; you can cancel this until the purge.",
        purge_after=purge_on,
    )


RESTORE_IP_FACTOR = 10  # one IP gets ten times an address's failures, across addresses


async def restore_with_password(
    request: Request, db: AsyncSession, *, email: str, password: str
) -> None:
    """`deletion.restore_with_password` behind failure budgets like the sign-in's (per address
    and IP, and per IP): a wrong password here is a password guess too. 429 when spent."""
    settings = _settings(request)
    limiter: RateLimiter = request.app.state.rate_limiter
    client = ClientInfo.from_request(request)
    backoff = Backoff(settings.login_failures_per_window, settings.login_failure_window_seconds)
    ip = client.ip or "unknown"
    budgets = [
        (f"restore:{ip}:{normalize_email(email)}", backoff),
        (f"restore-ip:{ip}", backoff.scaled(RESTORE_IP_FACTOR)),
    ]
    waits = [await limiter.failure_wait(key, budget) for key, budget in budgets]
    wait = max((w for w in waits if w is not None), default=None)
    if wait is not None:
        raise TooManyRequestsError(
            f"Too many failed attempts; try again in {wait} s",
            headers={"Retry-After": str(wait)},
            extra={"retry_after": wait},
        )
    try:
        await deletion.restore_with_password(
            db, email=email, password=password, days=settings.purge_after_days, client=client
        )
    except deletion.NotRestorableError:
        for key, budget in budgets:
            await limiter.record_failure(key, budget)
        raise


@router.post("/account/restore", response_model=AccountRestored)
async def restore_account(
    data: AccountRestoreIn, request: Request, db: DbSession
) -> AccountRestored:
    """Cancel a pending account deletion with the email link's `token`, or with `email` and
    `password`. Agents stay stopped and API keys stay revoked. 400 when nothing matches; 429
    after too many wrong passwords (as at sign-in)."""
    days = _settings(request).purge_after_days
    client = ClientInfo.from_request(request)
    if data.token is not None:
        await deletion.restore_with_token(db, token=data.token, days=days, client=client)
    elif data.email and data.password:
        await db.commit()
        await restore_with_password(request, db, email=data.email, password=data.password)
    else:  # pragma: no cover - the schema refuses it
        raise ValidationFailedError("give either token, or email and password", field="token")
    return AccountRestored(message="The deletion is cancelled: sign in to use your account.")
