"""Admin API: credit adjustments on any account, each audited with its reason."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from lunogen.auth.dependencies import Admin
from lunogen.billing import ledger, service
from lunogen.billing.schemas import AdminCreditsIn, AdminCreditsOut
from lunogen.billing.units import micro_to_credits_str
from lunogen.db import DbSession
from lunogen.errors import error_responses
from lunogen.kit.effects import Effects

router = APIRouter(prefix="/api/v1/admin/accounts", tags=["admin"])


@router.post(
    "/{user_id}/credits",
    response_model=AdminCreditsOut,
    status_code=201,
    responses=error_responses(409),
)
async def adjust_account_credits(
    user_id: str,
    data: AdminCreditsIn,
    request: Request,
    principal: Admin,
    db: DbSession,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Retrying with the same key applies the adjustment once",
        ),
    ] = None,
) -> AdminCreditsOut:
    """Add (or, with negative credits, take away) credits on a user's account: an `adjustment`
    entry and an audit row with the reason, together. Admin only."""
    entry, account = await service.adjust_credits(
        db,
        Effects(settings=request.app.state.settings, keyring=request.app.state.keyring),
        actor=principal.user,
        actor_key_id=principal.key_id,
        client=principal.client,
        user_id=user_id,
        credits=data.credits,
        reason=data.reason,
        client_key=idempotency_key,
    )
    return AdminCreditsOut(
        user_id=account.user_id,
        transaction=service.transaction_out(entry),
        balance=micro_to_credits_str(account.balance),
        available=micro_to_credits_str(ledger.available(account)),
    )
