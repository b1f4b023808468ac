"""What a contact sees while the agent answers: the channel type's `answering` context (typing
indicators, streamed drafts) around each turn of its threads, registered with the runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select

from lunogen.agent.models import Agent, AgentChannel
from lunogen.channel.contract import AnsweringTurn, ChannelType, type_of_channel_key
from lunogen.channel.registration import provider_context
from lunogen.channel.service import view_of
from lunogen.db import read_sessionmaker
from lunogen.kit.effects import Effects
from lunogen.runtime import replies
from lunogen.runtime.events import TURN_EVENTS
from lunogen.runtime.models import Message
from lunogen.worker.broker import runtime


def _shows_presence(kind: ChannelType) -> bool:
    return type(kind).answering is not ChannelType.answering


@replies.on_answering
@asynccontextmanager
async def answering(turn: replies.TurnInProgress) -> AsyncIterator[None]:
    found = type_of_channel_key(turn.channel_key)
    if found is None or found[1] is None or not _shows_presence(found[0]):
        yield
        return
    kind, channel_id = found
    rt = runtime()
    async with read_sessionmaker(rt.sessionmaker)() as session:
        row = (
            await session.execute(
                select(AgentChannel, Agent.name, Message.external_id)
                .join(Agent, Agent.id == AgentChannel.agent_id)
                .join(Message, Message.id == turn.inbound_id)
                .where(AgentChannel.id == channel_id)
            )
        ).first()
    if row is None or row[0].disabled_at is not None or turn.contact is None:
        yield
        return
    channel, agent_name, reference = row
    view = view_of(channel, agent_name=agent_name, keyring=rt.keyring)
    ctx = provider_context(Effects(settings=rt.settings, keyring=rt.keyring))
    shown = AnsweringTurn(
        turn.inbound_id, turn.contact, reference, turn.streams, events=rt.get(TURN_EVENTS)
    )
    async with kind.answering(ctx, view, shown):
        yield
