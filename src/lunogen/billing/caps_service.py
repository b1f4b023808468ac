"""Reading and setting spend caps for the API, the dashboard and the agent file.

The caller has already checked that the agent belongs to `owner_id` (the agent room's tenant
gate); these functions trust the ids they are given.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.billing import caps, ledger
from lunogen.billing.caps_schemas import (
    AccountCapIn,
    AccountCapOut,
    AgentCapsIn,
    AgentCapsOut,
    PeriodOut,
)
from lunogen.billing.units import credits_to_micro, micro_to_credits_str


def _micro(value: Decimal | None) -> int | None:
    return None if value is None else credits_to_micro(value)


def _credits(value: int | None) -> str | None:
    return None if value is None else micro_to_credits_str(value)


def _period(spend: caps.PeriodSpend) -> PeriodOut:
    used = spend.spent + spend.held
    percent = None
    if spend.limit is not None:
        percent = 100 if spend.limit == 0 else used * 100 // spend.limit
    return PeriodOut(
        period=spend.period,
        spent=micro_to_credits_str(spend.spent),
        held=micro_to_credits_str(spend.held),
        cap=_credits(spend.limit),
        percent=percent,
    )


async def agent_caps(session: AsyncSession, *, owner_id: str, agent_id: str) -> AgentCapsOut:
    row = await caps.get_cap(session, agent_id)
    today, month = await caps.spend_of(session, owner_id=owner_id, agent_id=agent_id)
    assert today is not None
    return AgentCapsOut(
        agent_id=agent_id,
        daily_credits=_credits(row.daily_micro if row else None),
        monthly_credits=_credits(row.monthly_micro if row else None),
        turn_credits=_credits(row.turn_micro if row else None),
        turn_tokens=row.turn_tokens if row else None,
        reply_text=row.reply_text if row else None,
        effective_reply_text=(row.reply_text if row and row.reply_text else caps.DEFAULT_REPLY),
        today=_period(today),
        this_month=_period(month),
    )


def agent_values(data: AgentCapsIn) -> dict[str, Any]:
    return {
        "daily_micro": _micro(data.daily_credits),
        "monthly_micro": _micro(data.monthly_credits),
        "turn_micro": _micro(data.turn_credits),
        "turn_tokens": data.turn_tokens,
        "reply_text": data.reply_text,
    }


async def set_agent_caps(
    session: AsyncSession, principal: Principal, *, agent_id: str, data: AgentCapsIn
) -> AgentCapsOut:
    """Replace the agent's caps (audited). Its counters for today and this month are set from
    the ledger, so a cap set mid-period counts what the agent already spent."""
    owner_id = principal.user.id
    await store_agent_caps(session, owner_id=owner_id, agent_id=agent_id, data=data)
    audit.record(
        session,
        action="caps.agent_set",
        actor_user_id=owner_id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent_id,
        details=_audit_details(data.model_dump(exclude={"reply_text"})),
    )
    return await agent_caps(session, owner_id=owner_id, agent_id=agent_id)


async def store_agent_caps(
    session: AsyncSession, *, owner_id: str, agent_id: str, data: AgentCapsIn
) -> None:
    """Write the agent's caps (no audit row: the caller writes its own)."""
    await _lock(session, owner_id)
    await caps.put_cap(
        session,
        subject=agent_id,
        owner_id=owner_id,
        agent_id=agent_id,
        values=agent_values(data),
    )
    await caps.resync(session, owner_id=owner_id, agent_id=agent_id)


async def file_entry(session: AsyncSession, *, agent_id: str) -> dict[str, Any] | None:
    """The agent's caps as the agent file's `caps` (credits as decimal strings), or None."""
    row = await caps.get_cap(session, agent_id)
    if row is None:
        return None
    values = AgentCapsIn(
        daily_credits=_decimal(row.daily_micro),
        monthly_credits=_decimal(row.monthly_micro),
        turn_credits=_decimal(row.turn_micro),
        turn_tokens=row.turn_tokens,
        reply_text=row.reply_text,
    )
    return values.model_dump(mode="json", exclude_none=True)


async def account_cap(session: AsyncSession, *, owner_id: str) -> AccountCapOut:
    row = await caps.get_cap(session, owner_id)
    _, month = await caps.spend_of(session, owner_id=owner_id, agent_id=None)
    return AccountCapOut(
        monthly_credits=_credits(row.monthly_micro if row else None), this_month=_period(month)
    )


async def set_account_cap(
    session: AsyncSession, principal: Principal, *, data: AccountCapIn
) -> AccountCapOut:
    """Set (or clear, with null) the account's monthly cap over all its agents (audited)."""
    owner_id = principal.user.id
    await _lock(session, owner_id)
    await caps.put_cap(
        session,
        subject=owner_id,
        owner_id=owner_id,
        agent_id=None,
        values={"monthly_micro": _micro(data.monthly_credits)},
    )
    await caps.resync(session, owner_id=owner_id, agent_id=None)
    audit.record(
        session,
        action="caps.account_set",
        actor_user_id=owner_id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="user",
        target_id=owner_id,
        details=_audit_details(data.model_dump()),
    )
    return await account_cap(session, owner_id=owner_id)


async def _lock(session: AsyncSession, owner_id: str) -> None:
    """Caps change under the owner's credit account lock, like the counters a turn checks
    (taken first, before any other row of the owner, as every ledger writer does)."""
    await ledger.ensure_account(session, owner_id)
    await ledger.lock_account(session, owner_id)


def _decimal(micro: int | None) -> Decimal | None:
    return None if micro is None else Decimal(micro_to_credits_str(micro))


def _audit_details(values: dict[str, Any]) -> dict[str, Any]:
    return {name: None if value is None else str(value) for name, value in values.items()}
