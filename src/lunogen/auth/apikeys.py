"""Developer API keys: `lg_live_` + 64 hex, shown once, stored as SHA-256 with a visible prefix."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.account.plans import at_limit_advice, limits_for
from lunogen.audit import service as audit
from lunogen.auth.models import ApiKey
from lunogen.auth.scopes import Scope
from lunogen.errors import ForbiddenError, NotFoundError
from lunogen.kit.ids import sha256_hex
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo

KEY_PREFIX = "lg_live_"
VISIBLE_CHARS = len(KEY_PREFIX) + 8


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_hex(32)


def looks_like_key(value: str) -> bool:
    body = value[len(KEY_PREFIX) :]
    return (
        value.startswith(KEY_PREFIX)
        and len(body) == 64
        and all(c in "0123456789abcdef" for c in body)
    )


async def active_key_count(session: AsyncSession, user_id: str) -> int:
    query = select(func.count()).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
    return int((await session.execute(query)).scalar_one())


async def create_key(
    session: AsyncSession,
    *,
    user: User,
    name: str,
    scopes: list[Scope],
    client: ClientInfo | None,
    actor_key_id: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key within the plan's key limit; return the row and the plaintext (shown once)."""
    limits = limits_for(user.plan)
    # Lock the user row so that two concurrent creations cannot both pass the count.
    await session.execute(select(User.id).where(User.id == user.id).with_for_update())
    if await active_key_count(session, user.id) >= limits.api_keys:
        noun = "key" if limits.api_keys == 1 else "keys"
        raise ForbiddenError(
            f"Your {limits.label} plan allows {limits.api_keys} active API {noun}; "
            + at_limit_advice(limits, "revoke one")
        )
    plaintext = generate_key()
    unique_scopes = sorted({s.value for s in scopes}) or [Scope.FULL.value]
    key = ApiKey(
        user_id=user.id,
        name=name,
        prefix=plaintext[:VISIBLE_CHARS],
        key_hash=sha256_hex(plaintext),
        scopes=unique_scopes,
    )
    session.add(key)
    await session.flush()
    audit.record(
        session,
        action="api_key.created",
        actor_user_id=user.id,
        actor_key_id=actor_key_id,
        client=client,
        target_type="api_key",
        target_id=key.id,
        details={"name": name, "scopes": unique_scopes, "prefix": key.prefix},
    )
    return key, plaintext


async def list_keys(session: AsyncSession, *, user_id: str) -> list[ApiKey]:
    query = (
        select(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at)
    )
    return list((await session.execute(query)).scalars())


async def revoke_key(
    session: AsyncSession,
    *,
    user_id: str,
    key_id: str,
    client: ClientInfo | None,
    actor_key_id: str | None = None,
) -> None:
    key = await session.get(ApiKey, key_id)
    if key is None or key.user_id != user_id or key.revoked_at is not None:
        raise NotFoundError(error="API key not found")
    key.revoked_at = utcnow()
    audit.record(
        session,
        action="api_key.revoked",
        actor_user_id=user_id,
        actor_key_id=actor_key_id,
        client=client,
        target_type="api_key",
        target_id=key.id,
        details={"prefix": key.prefix},
    )


async def find_active_key(session: AsyncSession, plaintext: str) -> ApiKey | None:
    found = await find_active_key_and_user(session, plaintext)
    return None if found is None else found[0]


async def find_active_key_and_user(
    session: AsyncSession, plaintext: str
) -> tuple[ApiKey, User] | None:
    """The unrevoked key with this plaintext and its user (deleted or not), in one query."""
    if not looks_like_key(plaintext):
        return None
    query = (
        select(ApiKey, User)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == sha256_hex(plaintext), ApiKey.revoked_at.is_(None))
    )
    row = (await session.execute(query)).one_or_none()
    return None if row is None else (row[0], row[1])
