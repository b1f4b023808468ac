"""Helpers for the support tests: staff members, a conversation of an account, moved clocks."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from lunogen.account.models import User
from lunogen.admin.models import ContentGrant
from lunogen.agent.models import Agent
from lunogen.kit.time import utcnow
from lunogen.runtime.service import InstantAnswer, accept_inbound
from tests.helpers import Api, Signed


async def staff(api: Api, role: str = "support") -> Signed:
    """A signed-in member of the support team (or an admin)."""
    person = await api.sign_up(api.unique_email(role))
    async with api.app.state.sessionmaker() as session:
        await session.execute(update(User).where(User.id == person.id).values(role=role))
        await session.commit()
    return person


async def conversation(api: Api, owner: Signed, text: str) -> tuple[str, str]:
    """A running agent of `owner` with one conversation: `text` and its (instant) reply, as
    (agent id, thread id). Written below the API: a turn needs a model, and only the stored
    messages matter here."""
    async with api.app.state.sessionmaker() as session:
        agent = Agent(
            owner_id=owner.id,
            name="Shop bot",
            model="openai/gpt-4o-mini",
            instructions="Secret sales playbook",
            status="running",
        )
        session.add(agent)
        await session.flush()
        accepted = await accept_inbound(
            session,
            agent=agent,
            channel_key="api",
            contact="customer-42",
            text=text,
            keyring=api.app.state.keyring,
            answer=InstantAnswer(text="Our opening hours are 9 to 5", why="test"),
        )
        await session.commit()
        return agent.id, accepted.thread.id


async def expire_grants(api: Api, user_id: str) -> None:
    """Move the clock past every content grant of `user_id`."""
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(ContentGrant)
            .where(ContentGrant.user_id == user_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def open_ticket(person: Signed, subject: str = "Bot stopped", body: str = "Help") -> str:
    response = await person.client.post(
        "/api/v1/support/tickets",
        json={"subject": subject, "body": body},
        headers=person.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
