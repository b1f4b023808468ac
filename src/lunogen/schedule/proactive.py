"""Proactive schedules: a run written to a chosen contact on one of the agent's channels.

The core names no channel: it asks the channel contract whether the type sends messages on
its own (`pushes_replies`) and whether the agent may write first to the contact now
(`ChannelType.proactive_refusal`, given when the contact last wrote). A contact is known on a
channel when the channel has met them: a `ChannelContact` row (channels with an access policy)
or a conversation with them on that channel (the webhook channel).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import AgentChannel
from lunogen.channel.contract import ChannelType, channel_type
from lunogen.channel.models import ChannelContact
from lunogen.errors import ValidationFailedError
from lunogen.runtime.models import Message, Thread

MAX_CONTACT_CHARS = 255


@dataclass(frozen=True)
class Met:
    """What the channel knows of a contact: whether it met them, when they last wrote, and
    whether they blocked the agent."""

    known: bool
    thread_id: str | None
    last_inbound_at: datetime | None
    blocked_at: datetime | None


async def met(
    session: AsyncSession, *, channel: AgentChannel, kind: ChannelType, contact: str
) -> Met:
    row = (
        await session.execute(
            select(ChannelContact).where(
                ChannelContact.channel_id == channel.id, ChannelContact.contact == contact
            )
        )
    ).scalar_one_or_none()
    thread_id = (
        await session.execute(
            select(Thread.id).where(
                Thread.agent_id == channel.agent_id,
                Thread.channel_key == kind.channel_key(channel.id),
                Thread.contact == contact,
            )
        )
    ).scalar_one_or_none()
    if row is not None:
        return Met(True, thread_id, row.last_inbound_at, row.blocked_at)
    if thread_id is None:
        return Met(False, None, None, None)
    # No contact row (a channel without an access policy): when they last wrote themselves.
    wrote = await session.scalar(
        select(func.max(func.coalesce(Message.sent_at, Message.created_at))).where(
            Message.thread_id == thread_id, Message.role == "user", Message.source.is_(None)
        )
    )
    return Met(True, thread_id, wrote, None)


async def check_target(
    session: AsyncSession, *, agent_id: str, channel_id: str | None, contact: str | None
) -> None:
    """422 naming the field unless `channel_id` and `contact` are both unset, or name a
    channel of the agent that sends messages on its own and a contact it has met."""
    if channel_id is None and contact is None:
        return
    if channel_id is None:
        raise ValidationFailedError("A contact needs the channel to write to", field="channel_id")
    if contact is None or not contact.strip():
        raise ValidationFailedError("A channel needs the contact to write to", field="contact")
    channel = (
        await session.execute(
            select(AgentChannel).where(
                AgentChannel.id == channel_id[:36], AgentChannel.agent_id == agent_id
            )
        )
    ).scalar_one_or_none()
    if channel is None or len(channel_id) > 36:
        raise ValidationFailedError("The agent has no channel with this id", field="channel_id")
    kind = channel_type(channel.type)
    if kind is None or not kind.pushes_replies:
        raise ValidationFailedError(
            f"A {channel.type} channel cannot send messages on its own: it only answers the "
            "request that brought a message",
            field="channel_id",
        )
    found = await met(session, channel=channel, kind=kind, contact=contact)
    if not found.known:
        raise ValidationFailedError(
            f"{contact!r} never wrote to the agent on this {channel.type} channel",
            field="contact",
        )


async def channel_choices(session: AsyncSession, *, agent_id: str) -> list[tuple[str, str]]:
    """The agent's channels a proactive schedule may write to: (id, a label for a form)."""
    rows = await session.execute(
        select(AgentChannel.id, AgentChannel.type)
        .where(AgentChannel.agent_id == agent_id)
        .order_by(AgentChannel.created_at, AgentChannel.id)
    )
    choices = []
    for channel_id, type_name in rows.all():
        kind = channel_type(type_name)
        if kind is not None and kind.pushes_replies:
            choices.append((channel_id, f"{type_name.capitalize()} channel {channel_id[:8]}"))
    return choices
