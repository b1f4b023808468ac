"""The API channel: send an agent a message with an API key and get the reply in the response,
as JSON or as server-sent events while it is written. Its threads are keyed `api`; it sends no
deliveries and registers with no provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.responses import Response, StreamingResponse

from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsExecute
from lunogen.channel.contract import ChannelType, register_type
from lunogen.channel.fields import Storable
from lunogen.channel.routes import publish
from lunogen.db import DbSession
from lunogen.errors import ConflictError, LunogenError
from lunogen.kit.crypto import KeyRing
from lunogen.runtime import approvals, service, waiting
from lunogen.runtime.events import TurnEvents
from lunogen.runtime.models import Message
from lunogen.runtime.schemas import MessageOut, message_out
from lunogen.runtime.tasks import enqueue_thread


class ApiChannelType(ChannelType):
    """Configured by no agent: every running agent takes API messages from its owner's keys."""

    name = "api"


API = register_type(ApiChannelType())
API_CHANNEL = API.channel_key(None)

router = publish(APIRouter(prefix="/api/v1/agents", tags=["conversations"]))


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=32_000), Storable]
    contact: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Storable
    ] = Field(default="api", description="Who is talking; each contact has its own thread.")
    wait_seconds: float = Field(
        default=60, ge=0, le=300, description="How long to wait for the reply before a 202."
    )
    stream: bool = Field(
        default=False,
        description="Answer with server-sent events as the reply is written (also chosen by "
        "`Accept: text/event-stream`): `delta`, `tool`, then `done` or `error`.",
    )


class ExchangeOut(BaseModel):
    message: MessageOut
    reply: MessageOut | None
    status: str = Field(
        description="`answered`, `pending` (poll the thread), `awaiting_approval` (a tool "
        "call waits for the owner's decision; the reply comes after it), or `failed`."
    )


@router.post(
    "/{agent_id}/messages",
    response_model=ExchangeOut,
    responses={
        200: {
            "description": "The reply; or, when streaming, server-sent events",
            "content": {"text/event-stream": {}},
        },
        202: {"description": "Accepted; the reply was not ready within `wait_seconds`"},
        402: {
            "description": "The owner's credits cannot cover the model call; "
            "`required_credits` and `available_credits` say by how much"
        },
        409: {
            "description": "The agent is not running (or stopped running before it could "
            "answer); `status` names its state"
        },
    },
)
async def send_message(
    agent_id: str, data: MessageIn, request: Request, principal: AgentsExecute, db: DbSession
) -> Response:
    """Send the agent a message and wait for its reply (up to `wait_seconds`), or stream it."""
    keyring: KeyRing = request.app.state.keyring
    events: TurnEvents = request.app.state.turn_events
    sessionmaker = request.app.state.sessionmaker
    streaming = data.stream or "text/event-stream" in request.headers.get("accept", "")
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    accepted = await service.accept_inbound(
        db,
        agent=agent,
        channel_key=API_CHANNEL,
        contact=data.contact,
        text=data.text,
        keyring=keyring,
    )
    accepted.message.stream = streaming
    following = AsyncExitStack()
    # Follow before the job exists, so that no event of the turn can be missed.
    subscription = await following.enter_async_context(events.follow(accepted.message.id))
    try:
        enqueue_thread(db, accepted.thread.id)
        await db.commit()
    except BaseException:
        await following.aclose()
        raise
    if streaming:
        body = waiting.stream_reply(
            sessionmaker,
            keyring,
            subscription,
            message_id=accepted.message.id,
            thread_id=accepted.thread.id,
            wait_seconds=data.wait_seconds,
        )
        return StreamingResponse(
            _closing(body, following),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    async with following:
        inbound, reply = await waiting.wait_for_reply(
            sessionmaker,
            subscription,
            accepted.message.id,
            data.wait_seconds,
            check_first=False,  # just accepted: its turn ends after we followed it
        )
    if inbound.status in ("failed", "skipped"):
        raise _failed(inbound)
    status = "answered" if reply is not None else inbound.status
    if reply is None and inbound.status == "pending" and await approvals.waits_for(db, inbound.id):
        status = "awaiting_approval"
    exchange = ExchangeOut(
        message=message_out(inbound, keyring),
        reply=message_out(reply, keyring) if reply is not None else None,
        status=status,
    )
    return JSONResponse(exchange.model_dump(mode="json"), status_code=200 if reply else 202)


def _failed(inbound: Message) -> LunogenError:
    ids = {"message_id": inbound.id, "thread_id": inbound.thread_id}
    failure = inbound.failure or {}
    if failure.get("code") == "moderation_blocked":  # kept, not answered (runtime.screening)
        return LunogenError(
            f"The message was not answered: {inbound.last_error}",
            error="Message blocked",
            status_code=422,
            extra={"code": "moderation_blocked", **ids},
        )
    if inbound.status == "skipped":  # the agent stopped running before the turn began
        state = str(failure.get("status") or "not running")
        return ConflictError(
            f"The message was not answered: {inbound.last_error or 'the agent stopped'}",
            error=f"Agent is {state}",
            extra={"status": state, **ids},
        )
    if failure.get("code") == "insufficient_credits":
        return LunogenError(
            inbound.last_error or "Not enough credits",
            error="Insufficient credits",
            status_code=402,
            extra={
                "required_credits": failure.get("required_credits"),
                "available_credits": failure.get("available_credits"),
                **ids,
            },
        )
    return LunogenError(
        inbound.last_error or "The agent could not answer",
        error="Agent failed to answer",
        status_code=502,
        extra=ids,
    )


async def _closing(body: AsyncIterator[str], following: AsyncExitStack) -> AsyncIterator[str]:
    try:
        async for chunk in body:
            yield chunk
    finally:
        await following.aclose()
