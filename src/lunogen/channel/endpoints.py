"""Inbound messages on an agent's webhook channel, authenticated by Standard Webhooks signatures.

No API key: whoever holds the channel's `whsec_` secret may talk to the agent through it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from lunogen.agent.models import Agent, AgentChannel
from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsWrite
from lunogen.channel import webhook
from lunogen.channel.fields import Storable
from lunogen.channel.schemas import ChannelOut, ChannelOutBase
from lunogen.channel.service import enable_channel, enable_path, read_secrets, render_channel
from lunogen.db import DbSession
from lunogen.errors import (
    ConflictError,
    LunogenError,
    NotFoundError,
    UnauthorizedError,
    validation_response,
)
from lunogen.kit.crypto import KeyRing
from lunogen.runtime import service, waiting
from lunogen.runtime.events import TurnEvents
from lunogen.runtime.models import Message
from lunogen.runtime.tasks import enqueue_thread

router = APIRouter(prefix="/hooks", tags=["webhook channel"])
# The owner's side of channel state; mounted next to the agent endpoints.
agent_channels_router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

SYNC_WAIT_SECONDS = 25.0
MAX_BODY_BYTES = 256_000  # this route's cap in BodyLimitMiddleware (app.py)


class WebhookMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=200), Storable] = Field(
        description="Your id for this message; a repeated id is answered without a new turn."
    )
    sender: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Storable
    ] = Field(alias="from", description="Who is talking; each sender has its own thread.")
    text: Annotated[str, StringConstraints(min_length=1, max_length=32_000), Storable]


def _not_found() -> NotFoundError:
    return NotFoundError(error="Channel not found")


async def _channel(db: DbSession, channel_id: str) -> tuple[AgentChannel, Agent]:
    if len(channel_id) > 36:
        raise _not_found()
    row = (
        await db.execute(
            select(AgentChannel, Agent)
            .join(Agent, Agent.id == AgentChannel.agent_id)
            .where(
                AgentChannel.id == channel_id,
                AgentChannel.type == "webhook",
                Agent.deleted_at.is_(None),
            )
        )
    ).one_or_none()
    if row is None:
        raise _not_found()
    return row[0], row[1]


class ChannelDisabledError(ConflictError):
    def __init__(self, channel: AgentChannel) -> None:
        assert channel.disabled_at is not None
        reason = channel.disabled_reason or "its receiver is gone"
        enable = enable_path(agent_id=channel.agent_id, channel_id=channel.id)
        super().__init__(
            f"This channel was disabled because {reason}. It takes no messages until the "
            f"agent's owner re-enables it: POST {enable} (scope agents:write), or a new "
            f"callback_url for it in PATCH /api/v1/agents/{channel.agent_id}.",
            error="Channel disabled",
            extra={
                "disabled_at": channel.disabled_at.isoformat().replace("+00:00", "Z"),
                "reason": reason,
            },
        )


async def _deliver_later(request: Request, *, inbound: Message, channel_id: str) -> None:
    """The sync caller gave up waiting: send the reply (or failure notice) to the callback."""
    sessionmaker = request.app.state.sessionmaker
    async with sessionmaker() as session:
        session.add(webhook.new_delivery(inbound=inbound, channel_id=channel_id))
        try:
            await session.commit()
        except IntegrityError:  # already arranged (a duplicate request timed out first)
            await session.rollback()
    # The turn may have ended before our row existed: queue it ourselves then.
    async with sessionmaker() as session:
        await webhook.queue_if_settled(session, inbound_id=inbound.id)
        await session.commit()


def _accepted(inbound: Message) -> JSONResponse:
    return JSONResponse({"status": "accepted", "message_id": inbound.id}, status_code=202)


def _parse(body: bytes) -> WebhookMessageIn | Response:
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return JSONResponse(
            {"error": "Bad request", "message": "The body must be a JSON object"}, status_code=400
        )
    try:
        return WebhookMessageIn.model_validate(data)
    except ValidationError as exc:
        return validation_response(
            [dict(e) for e in exc.errors(include_url=False, include_input=False)]
        )


_SIGNATURE_HEADERS = [
    {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }
    for name, description in (
        ("webhook-id", "The sender's message id (stable across its retries)"),
        ("webhook-timestamp", "Unix seconds; within 5 minutes of our clock"),
        ("webhook-signature", "`v1,<base64 HMAC-SHA256>` entries, space-separated"),
    )
]


@router.post(
    "/webhook/{channel_id}",
    openapi_extra={
        "parameters": _SIGNATURE_HEADERS,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WebhookMessageIn.model_json_schema()}},
        },
    },
    responses={
        200: {"description": "sync mode: the reply `{id, reply_to, text}`"},
        202: {"description": "async mode, or the reply was not ready in time"},
        401: {"description": "Missing, invalid or stale Standard Webhooks signature"},
        409: {
            "description": "The agent is not running (`status` names its state), or the channel "
            "was disabled after its callback URL answered 410 (`Channel disabled`)"
        },
    },
)
async def receive(channel_id: str, request: Request, db: DbSession) -> Response:
    """A message for the agent: JSON `{id, from, text}`, signed with the channel's secret."""
    keyring: KeyRing = request.app.state.keyring
    events: TurnEvents = request.app.state.turn_events
    channel, agent = await _channel(db, channel_id)
    body = await request.body()  # at most MAX_BODY_BYTES: BodyLimitMiddleware cut it off (413)
    try:
        webhook.verify(request.headers, body, [read_secrets(channel, keyring)["secret"]])
    except webhook.SignatureError as exc:
        raise UnauthorizedError(str(exc), error="Invalid webhook signature") from exc
    if channel.disabled_at is not None:  # told only to whoever holds the secret
        raise ChannelDisabledError(channel)
    parsed = _parse(body)
    if isinstance(parsed, Response):
        return parsed

    accepted = await service.accept_inbound(
        db,
        agent=agent,
        channel_key=webhook.channel_key(channel.id),
        contact=parsed.sender,
        text=parsed.text,
        keyring=keyring,
        dedupe_key=webhook.dedupe_key(channel.id, parsed.id),
    )
    mode = channel.config.get("mode", "sync")
    if not accepted.duplicate:
        if mode == "async":
            db.add(webhook.new_delivery(inbound=accepted.message, channel_id=channel.id))
        enqueue_thread(db, accepted.thread.id)
    if mode == "async":
        await db.commit()
        return _accepted(accepted.message)

    # Follow the turn before the commit that enqueues it, so that its end cannot be missed. A
    # duplicate's turn may be over already: `wait_for_reply` reads the database first.
    async with events.follow(accepted.message.id) as subscription:
        await db.commit()
        inbound, reply = await waiting.wait_for_reply(
            request.app.state.sessionmaker, subscription, accepted.message.id, SYNC_WAIT_SECONDS
        )
    if reply is not None:
        return JSONResponse(
            {"id": reply.id, "reply_to": parsed.id, "text": keyring.decrypt(reply.content)}
        )
    if inbound.status in webhook.UNANSWERED:
        raise LunogenError(
            inbound.last_error or "The agent could not answer",
            error="Agent failed to answer",
            status_code=502,
            extra={"message_id": inbound.id},
        )
    if channel.config.get("callback_url") and not accepted.duplicate:
        await _deliver_later(request, inbound=inbound, channel_id=channel.id)
    return _accepted(inbound)


# The owner's side ---------------------------------------------------------------------------


@agent_channels_router.post(
    "/{agent_id}/channels/{channel_id}/enable",
    response_model=ChannelOut,
    responses={
        404: {
            "description": "No agent with this id is visible to you, or it has no such channel",
            "content": {"application/json": {"example": {"error": "Agent not found"}}},
        }
    },
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
