from __future__ import annotations

from fastapi import APIRouter, Request

from lunogen.account import service as accounts
from lunogen.account.schemas import (
    EmailChangeIn,
    EmailChangeOut,
    EmailStatusOut,
    MeOut,
    ProfileIn,
    TokenIn,
)
from lunogen.auth.dependencies import FullAccess, SetupUser
from lunogen.db import DbSession
from lunogen.errors import error_responses
from lunogen.kit.effects import Effects
from lunogen.privacy import email_change

router = APIRouter(prefix="/api/v1", tags=["account"])


@router.get("/me", response_model=MeOut)
async def get_me(principal: SetupUser) -> MeOut:
    """Your profile, role, plan and plan limits; `setup_complete` says whether consent is due."""
    return accounts.me_out(principal.user)


@router.patch("/me", response_model=MeOut)
async def update_me(data: ProfileIn, principal: FullAccess, db: DbSession) -> MeOut:
    """Change your name (1-200 characters). Scope: full access; audited."""
    user = await accounts.rename(
        db, user=principal.user, name=data.name, client=principal.client, key_id=principal.key_id
    )
    return accounts.me_out(user)


def _effects(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


@router.get("/me/email", response_model=EmailStatusOut)
async def get_email(principal: FullAccess, db: DbSession) -> EmailStatusOut:
    """Your email address, and the change waiting for its confirmation link, if any."""
    pending = await email_change.pending_change(db, user_id=principal.user.id)
    return EmailStatusOut(
        email=principal.user.email,
        pending_email=pending.new_email if pending else None,
        pending_expires_at=pending.expires_at if pending else None,
    )


@router.post(
    "/me/email",
    response_model=EmailChangeOut,
    status_code=202,
    responses=error_responses(409),
)
async def change_email(
    data: EmailChangeIn, request: Request, principal: FullAccess, db: DbSession
) -> EmailChangeOut:
    """Change your email address: a one-use link goes to the new address (valid
    LUNOGEN_EMAIL_TOKEN_HOURS) and a notice to the current one; the address changes when the
    link is opened while signed in to this account (`POST /api/v1/me/email/confirm`). A new
    request replaces a pending one. Give your password; an account without one (Google only)
    needs a browser session signed in within the last 10 minutes (403 otherwise). 400 on a
    wrong password, 409 when another account has the address, 422 for a malformed one, 429
    after 5 requests in an hour. Scope: full access; audited."""
    await email_change.within_budget(request.app.state.rate_limiter, user_id=principal.user.id)
    await db.commit()  # end the authenticator's transaction before argon2 runs
    pending = await email_change.request_change(
        db,
        principal=principal,
        new_email=data.new_email,
        password=data.password,
        effects=_effects(request),
    )
    return EmailChangeOut(
        message="Open the link we sent to the new address to confirm the change.",
        pending_email=pending.new_email,
        expires_at=pending.expires_at,
    )


@router.post("/me/email/confirm", response_model=MeOut, responses=error_responses(409))
async def confirm_email_change(
    data: TokenIn, request: Request, principal: FullAccess, db: DbSession
) -> MeOut:
    """Switch to the new address with the token of the link emailed to it. Only the account
    that asked can use it (400 for anyone else's, a used or an expired one); 409 when another
    account took the address meanwhile. The old address is told. Scope: full access; audited
    (`account.email_changed`)."""
    user = await email_change.confirm_change(
        db, principal=principal, token=data.token, effects=_effects(request)
    )
    return accounts.me_out(user)
