"""The owner's side of channels: re-enable a disabled channel, pairing codes, contacts.

Inbound requests from providers are `channel.inbox`'s routes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.responses import Response

from lunogen.agent.models import AgentChannel
from lunogen.agent.service import get_agent
from lunogen.audit import service as audit
from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.channel import access
from lunogen.channel.models import ChannelContact
from lunogen.channel.routes import publish
from lunogen.channel.schemas import ChannelOut, ChannelOutBase
from lunogen.channel.service import enable_channel, render_channel
from lunogen.db import DbSession
from lunogen.errors import ConflictError, NotFoundError

agent_channels_router = publish(APIRouter(prefix="/api/v1/agents", tags=["agents"]))

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No agent with this id is visible to you, or it has no such channel",
        "content": {"application/json": {"example": {"error": "Channel not found"}}},
    }
}


def _not_found() -> NotFoundError:
    return NotFoundError(error="Channel not found")


# The owner's side ---------------------------------------------------------------------------


@agent_channels_router.post(
    "/{agent_id}/channels/{channel_id}/enable",
    response_model=ChannelOut,
    responses=_NOT_FOUND,
)
async def enable_agent_channel(
    agent_id: str, channel_id: str, principal: AgentsWrite, db: DbSession
) -> ChannelOutBase:
    """Re-enable a channel that was disabled (its callback URL answered 410). Scope: `agents:write`.

    Callbacks are sent and messages accepted again from now on; deliveries dropped while it was
    disabled stay dropped. Enabling a channel that is not disabled changes nothing.
    """
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, for_update=True)
    channel = next((row for row in agent.channels if row.id == channel_id), None)
    if channel is None:
        raise _not_found()
    enable_channel(db, principal=principal, agent=agent, channel=channel)
    return render_channel(channel)


async def _owned_channel(
    db: DbSession, principal_user_id: str, agent_id: str, channel_id: str
) -> AgentChannel:
    agent = await get_agent(db, owner_id=principal_user_id, agent_id=agent_id)
    channel = next((row for row in agent.channels if row.id == channel_id), None)
    if channel is None:
        raise _not_found()
    return channel


class PairingCodeOut(BaseModel):
    code: str = Field(description="Shown only in this response: give it to the person to pair.")
    expires_at: datetime
    channel_id: str


@agent_channels_router.post(
    "/{agent_id}/channels/{channel_id}/pairing-codes",
    response_model=PairingCodeOut,
    status_code=201,
    responses={
        **_NOT_FOUND,
        409: {"description": "The channel's access policy is not `pairing`"},
    },
)
async def create_pairing_code(
    agent_id: str, channel_id: str, principal: AgentsWrite, db: DbSession
) -> PairingCodeOut:
    """A one-use 8-character code for a `pairing` channel, valid for one hour. Scope:
    `agents:write`. The person sends it to the agent on the channel to be paired."""
    channel = await _owned_channel(db, principal.user.id, agent_id, channel_id)
    policy = access.config_policy(channel.config)
    if policy != "pairing":
        raise ConflictError(
            f"This channel's access policy is {policy!r}; pairing codes are for channels whose "
            "policy is 'pairing'.",
            error="Not a pairing channel",
        )
    code, expires = await access.make_pairing_code(db, channel_id=channel.id)
    audit.record(
        db,
        action="agent.pairing_code_created",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent_id,
        details={"channel_id": channel.id, "expires_at": expires.isoformat()},
    )
    return PairingCodeOut(code=code, expires_at=expires, channel_id=channel.id)


class ContactOut(BaseModel):
    contact: str
    name: str | None
    first_seen_at: datetime
    last_inbound_at: datetime | None
    paired_at: datetime | None
    refused_at: datetime | None
    blocked_at: datetime | None


@agent_channels_router.get(
    "/{agent_id}/channels/{channel_id}/contacts",
    response_model=list[ContactOut],
    responses=_NOT_FOUND,
)
async def list_channel_contacts(
    agent_id: str, channel_id: str, principal: AgentsRead, db: DbSession
) -> list[ContactOut]:
    """Who wrote to the agent on this channel: paired, refused once, or blocking the agent.
    Scope: `agents:read`. The newest 500."""
    channel = await _owned_channel(db, principal.user.id, agent_id, channel_id)
    rows = (
        await db.execute(
            select(ChannelContact)
            .where(ChannelContact.channel_id == channel.id)
            .order_by(ChannelContact.created_at.desc())
            .limit(500)
        )
    ).scalars()
    return [
        ContactOut(
            contact=row.contact,
            name=row.name,
            first_seen_at=row.created_at,
            last_inbound_at=row.last_inbound_at,
            paired_at=row.paired_at,
            refused_at=row.refused_at,
            blocked_at=row.blocked_at,
        )
        for row in rows
    ]


@agent_channels_router.delete(
    "/{agent_id}/channels/{channel_id}/contacts/{contact}/pairing",
    status_code=204,
    responses={**_NOT_FOUND, 404: {"description": "No such channel, or the contact is not paired"}},
)
async def unpair_contact(
    agent_id: str, channel_id: str, contact: str, principal: AgentsWrite, db: DbSession
) -> Response:
    """Revoke a contact's pairing: their next message gets the polite refusal again, then
    silence. Scope: `agents:write`."""
    channel = await _owned_channel(db, principal.user.id, agent_id, channel_id)
    if not await access.unpair(db, channel_id=channel.id, contact=contact):
        raise NotFoundError("This contact is not paired on this channel", error="Not paired")
    audit.record(
        db,
        action="agent.contact_unpaired",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent_id,
        details={"channel_id": channel.id, "contact": contact},
    )
    return Response(status_code=204)
