"""The starter grant: credits for a new verified account, once per person.

"Once per person" outlives the account: a claim row keyed by a hash of each identity (the
mailbox the address delivers to, see `account/addresses.py`, and the Google subject) is kept
when the account is deleted, so closing an account and signing up again with the same address,
an alias of it (`+tag`, Gmail dots) or the same Google account grants nothing.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.account.addresses import mailbox_identity
from lunogen.account.models import User
from lunogen.billing import ledger
from lunogen.billing.units import credits_to_micro
from lunogen.db import Base
from lunogen.kit.time import utcnow


class StarterGrantClaim(Base):
    __tablename__ = "starter_grant_claims"

    identity_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)


def _identities(user: User) -> list[str]:
    names = [f"email:{mailbox_identity(user.email)}"]
    if user.google_sub:
        names.append(f"google:{user.google_sub}")
    return [hashlib.sha256(name.encode()).hexdigest() for name in names]


async def grant_starter_credits(session: AsyncSession, *, user: User, credits: int) -> bool:
    """Grant `credits` to a newly verified `user` unless this person had them before."""
    if credits <= 0:
        return False
    hashes = _identities(user)
    claimed = (
        await session.execute(
            select(StarterGrantClaim).where(StarterGrantClaim.identity_hash.in_(hashes))
        )
    ).scalars()
    known = {claim.identity_hash: claim for claim in claimed}
    try:
        async with session.begin_nested():
            for identity in hashes:
                if identity not in known:  # a new way to recognise the same person next time
                    session.add(StarterGrantClaim(identity_hash=identity, user_id=user.id))
    except IntegrityError:  # the same person verified twice at once: the other one grants
        return False
    if known:
        return False
    await ledger.ensure_account(session, user.id)
    await ledger.post(
        session,
        account_id=user.id,
        kind="grant",
        amount=credits_to_micro(credits),
        key=f"starter:{user.id}",
        description=f"Starter credits ({credits})",
    )
    return True
