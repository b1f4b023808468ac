"""What running low and running out of credits does to an owner's agents, and tells them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.agent.lifecycle import Effects, set_status
from lunogen.agent.models import Agent
from lunogen.billing import ledger
from lunogen.billing.models import CreditAccount
from lunogen.billing.units import micro_to_credits_str
from lunogen.config import Settings
from lunogen.kit.crypto import KeyRing
from lunogen.kit.time import utcnow
from lunogen.notification.service import notify

OUT_OF_CREDITS = "out of credits: top up to resume"


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


async def pause_for_credits(
    session: AsyncSession, effects: Effects, *, owner_id: str, required: int
) -> list[str]:
    """Pause the owner's running agents (each logged and notified once); returns their ids.

    Nothing is paused when the account can cover `required` by now (a top-up won the race).
    """
    running = (
        await session.execute(
            select(Agent)
            .where(Agent.owner_id == owner_id, Agent.status == "running")
            .where(Agent.deleted_at.is_(None))
            .with_for_update()
        )
    ).scalars()
    paused: list[str] = []
    for agent in running:
        if not await ledger.pause_agent(
            session, account_id=owner_id, agent_id=agent.id, required=required
        ):
            break
        await set_status(
            session, agent=agent, status="paused", effects=effects, reason=OUT_OF_CREDITS
        )
        paused.append(agent.id)
    return paused


async def resume_after_top_up(
    session: AsyncSession, effects: Effects, *, owner_id: str
) -> list[str]:
    """Run again exactly the agents that were paused for credits, if the balance is above zero."""
    account = await ledger.get_account(session, owner_id)
    if account is None or ledger.available(account) <= 0:
        return []
    resumed: list[str] = []
    for agent_id in await ledger.take_paused_agents(session, owner_id):
        agent = await session.get(Agent, agent_id, with_for_update=True)
        if agent is None or agent.deleted_at is not None or agent.status != "paused":
            continue
        await set_status(session, agent=agent, status="running", effects=effects)
        resumed.append(agent.id)
    return resumed
