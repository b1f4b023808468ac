"""Inbound messages on an agent's webhook channel, authenticated by Standard Webhooks signatures.

No API key: whoever holds the channel's `whsec_` secret may talk to the agent through it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from lunogen.agent.models import Agent, AgentChannel
from lunogen.channel import webhook
from lunogen.channel.fields import Storable
from lunogen.channel.service import read_secrets
from lunogen.db import DbSession
from lunogen.errors import LunogenError, NotFoundError, UnauthorizedError, validation_response
from lunogen.kit.crypto import KeyRing
from lunogen.runtime import service
from lunogen.runtime.models import Message
from lunogen.runtime.tasks import enqueue_thread

router = APIRouter(prefix="/hooks", tags=["webhook channel"])

SYNC_WAIT_SECONDS = 25.0
POLL_SECONDS = 0.02
MAX_BODY_BYTES = 256_000


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


async def _reply_of(request: Request, inbound_id: str) -> tuple[Message, Message | None]:
    async with request.app.state.sessionmaker() as session:
        inbound = await session.get(Message, inbound_id)
        assert inbound is not None
        reply = (
            await session.execute(select(Message).where(Message.reply_to_id == inbound_id))
        ).scalar_one_or_none()
        return inbound, reply


async def _wait_for_reply(
    request: Request, inbound_id: str, seconds: float
) -> tuple[Message, Message | None]:
    deadline = time.monotonic() + seconds
    while True:
        inbound, reply = await _reply_of(request, inbound_id)
        if inbound.status != "pending" or time.monotonic() >= deadline:
            return inbound, reply
        await asyncio.sleep(POLL_SECONDS)


async def _deliver_later(request: Request, *, inbound: Message, channel_id: str) -> None:
    """The sync caller gave up waiting: send the reply to the callback once it exists."""
    sessionmaker = request.app.state.sessionmaker
    async with sessionmaker() as session:
        session.add(webhook.new_delivery(inbound=inbound, channel_id=channel_id))
        try:
            await session.commit()
        except IntegrityError:  # already arranged (a duplicate request timed out first)
            await session.rollback()
    # The turn may have stored the reply before our row existed: queue it ourselves then.
    async with sessionmaker() as session:
        answered = (
            await session.execute(select(Message.id).where(Message.reply_to_id == inbound.id))
        ).first()
        if answered is not None:
            await webhook.reply_ready(session, inbound_id=inbound.id)
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
        409: {"description": "The agent is not running; `status` names its state"},
    },
)
async def receive(channel_id: str, request: Request, db: DbSession) -> Response:
    """A message for the agent: JSON `{id, from, text}`, signed with the channel's secret."""
    keyring: KeyRing = request.app.state.keyring
    channel, agent = await _channel(db, channel_id)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise LunogenError(
            f"The body is larger than {MAX_BODY_BYTES} bytes",
            error="Payload too large",
            status_code=413,
        )
    try:
        webhook.verify(request.headers, body, [read_secrets(channel, keyring)["secret"]])
    except webhook.SignatureError as exc:
        raise UnauthorizedError(str(exc), error="Invalid webhook signature") from exc
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
    await db.commit()
    if mode == "async":
        return _accepted(accepted.message)

    inbound, reply = await _wait_for_reply(request, accepted.message.id, SYNC_WAIT_SECONDS)
    if reply is not None:
        return JSONResponse(
            {"id": reply.id, "reply_to": parsed.id, "text": keyring.decrypt(reply.content)}
        )
    if inbound.status in ("failed", "skipped"):
        raise LunogenError(
            inbound.last_error or "The agent could not answer",
            error="Agent failed to answer",
            status_code=502,
            extra={"message_id": inbound.id},
        )
    if channel.config.get("callback_url") and not accepted.duplicate:
        await _deliver_later(request, inbound=inbound, channel_id=channel.id)
    return _accepted(inbound)
