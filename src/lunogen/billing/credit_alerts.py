"""What running low and running out of credits does to an owner's agents, and tells them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.agent.lifecycle import set_status
from lunogen.agent.models import Agent
from lunogen.billing import ledger, metering
from lunogen.billing.models import CreditAccount
from lunogen.billing.units import micro_to_credits_str
from lunogen.config import Settings
from lunogen.kit.crypto import KeyRing
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow
from lunogen.notification.service import notify

OUT_OF_CREDITS = "out of credits: top up to resume"
PAUSE_STATES = frozenset({"paused", "stopped"})  # stopped: by hand, while paused for credits


async def low_credits(
    session: AsyncSession, settings: Settings, keyring: KeyRing, *, account: CreditAccount
) -> None:
    """One notification each time the available credits fall to the owner's threshold."""
    owner = await session.get(User, account.user_id)
    if owner is None:
        return
    left = micro_to_credits_str(max(ledger.available(account), 0))
    await notify(
        session,
        user=owner,
        kind="credits.low",
        title="Your LunoGen credits are running low",
        body=f"You have {left} credits left. Top up to keep your agents answering.",
        dedupe_key=f"credits-low:{account.user_id}:{utcnow().isoformat()}",
        settings=settings,
        keyring=keyring,
    )


async def pause_for_credits(session: AsyncSession, effects: Effects, *, owner_id: str) -> list[str]:
    """Pause the owner's running agents whose cheapest call the settled balance cannot pay for
    (each logged and notified once); returns their ids.

    The settled balance, not the available credits: credits held by calls in flight come back
    when those calls end, so a burst of messages on a small balance refuses some of them (402)
    without pausing anything. The account is locked first, as every ledger writer does.
    """
    await ledger.lock_account(session, owner_id)
    running = (
        await session.execute(
            select(Agent)
            .where(Agent.owner_id == owner_id, Agent.status == "running")
            .where(Agent.deleted_at.is_(None))
            .order_by(Agent.id)
            .with_for_update()
        )
    ).scalars()
    paused: list[str] = []
    for agent in list(running):
        required = await metering.agent_cheapest_call(session, effects.settings, agent)
        if not await ledger.pause_agent(
            session, account_id=owner_id, agent_id=agent.id, required=required
        ):
            continue
        await set_status(
            session, agent=agent, status="paused", effects=effects, reason=OUT_OF_CREDITS
        )
        paused.append(agent.id)
    return paused


async def resume_after_top_up(
    session: AsyncSession, effects: Effects, *, owner_id: str
) -> list[str]:
    """Run again the agents paused for credits whose cheapest call the balance now pays for.

    An agent stopped by hand while paused stays stopped (its pause is forgotten once the
    credits cover it, so `start` no longer asks for them); one that left the pause any other
    way (deleted, suspended) is forgotten.
    """
    account = await ledger.lock_account(session, owner_id)
    if account is None:
        return []
    resumed: list[str] = []
    for agent_id in await ledger.paused_agents(session, owner_id):
        agent = await session.get(Agent, agent_id, with_for_update=True)
        if agent is None or agent.deleted_at is not None or agent.status not in PAUSE_STATES:
            await ledger.forget_pause(session, agent_id)
            continue
        if account.balance < await metering.agent_cheapest_call(session, effects.settings, agent):
            continue
        await ledger.forget_pause(session, agent_id)
        if agent.status == "paused":
            await set_status(session, agent=agent, status="running", effects=effects)
            resumed.append(agent.id)
    return resumed
