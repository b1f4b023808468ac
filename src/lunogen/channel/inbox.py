"""Inbound requests from providers: `/hooks/<type>/<channel id>` for every channel type with an
inbound route. The type verifies and parses the request; this module stores what it found, in
the request's one transaction, through the same exactly-once inbox as every channel (a repeated
dedupe key is a no-op), applies the channel's access policy, and enqueues the turns.

Order: messages of one thread are numbered as they are stored and answered in that order.
Verification failures store nothing. A provider (Telegram, WhatsApp) is answered 200 once the
request is stored, even when the agent is stopped (the message is logged as dropped), since it
would only retry; a machine sender (the webhook) is told why with a 4xx.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.agent.models import Agent, AgentChannel
from lunogen.channel import access, delivery
from lunogen.channel.contract import (
    AcceptedInbound,
    ChannelType,
    ChannelView,
    Inbound,
    InboundRejected,
    InboundRequest,
    registered_types,
)
from lunogen.channel.service import enable_path, tell_owner, view_of
from lunogen.db import DbSession
from lunogen.errors import ConflictError, NotFoundError, validation_response
from lunogen.kit.crypto import KeyRing
from lunogen.kit.effects import Effects
from lunogen.runlog.logs import log_event
from lunogen.runtime import service
from lunogen.runtime.service import AgentNotRunningError, InstantAnswer
from lunogen.runtime.tasks import enqueue_thread
from lunogen.worker.enqueue import enqueue

log = structlog.get_logger(__name__)


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


def _not_found() -> NotFoundError:
    return NotFoundError(error="Channel not found")


async def _channel(
    db: AsyncSession, kind: ChannelType, channel_id: str
) -> tuple[AgentChannel, Agent]:
    if len(channel_id) > 36:
        raise _not_found()
    row = (
        await db.execute(
            select(AgentChannel, Agent)
            .join(Agent, Agent.id == AgentChannel.agent_id)
            .where(
                AgentChannel.id == channel_id,
                AgentChannel.type == kind.name,
                Agent.deleted_at.is_(None),
            )
        )
    ).one_or_none()
    if row is None:
        raise _not_found()
    return row[0], row[1]


def _rejected(exc: InboundRejected) -> Response:
    if exc.details is not None:
        return validation_response(exc.details)
    return JSONResponse({"error": exc.error, "message": exc.message}, status_code=exc.status)


async def _inbound_request(request: Request) -> InboundRequest:
    return InboundRequest(
        method=request.method,
        headers=request.headers,
        query=request.query_params,
        body=await request.body(),  # capped by BodyLimitMiddleware (413)
    )


def _effects(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


async def receive(
    kind: ChannelType, channel_id: str, request: Request, db: AsyncSession
) -> Response:
    keyring: KeyRing = request.app.state.keyring
    channel, agent = await _channel(db, kind, channel_id)
    inbound = await _inbound_request(request)
    view = view_of(channel, agent_name=agent.name, keyring=keyring)
    try:
        kind.verify(inbound, view)
        if channel.disabled_at is not None:  # told only to whoever proved who they are
            if kind.answers_errors_to_sender:
                raise ChannelDisabledError(channel)
            _log_dropped(db, view, "the channel is disabled")
            await db.commit()
            return JSONResponse({"ok": True})
        parsed = kind.parse(inbound, view)
    except InboundRejected as exc:
        return _rejected(exc)
    if parsed.statuses:
        await delivery.apply_statuses(
            db, channel_id=channel.id, statuses=parsed.statuses, effects=_effects(request)
        )
    accepted: list[AcceptedInbound] = []
    for message in parsed.messages:
        stored = await _accept(db, kind, view, agent, message, keyring, _effects(request))
        if stored is not None:
            accepted.append(stored)
    for reason in parsed.ignored:
        log.info("inbound_ignored", channel_id=channel.id, reason=reason)
    return await kind.respond(request, view, accepted, db.commit)


async def challenge(
    kind: ChannelType, channel_id: str, request: Request, db: AsyncSession
) -> Response:
    keyring: KeyRing = request.app.state.keyring
    channel, agent = await _channel(db, kind, channel_id)
    view = view_of(channel, agent_name=agent.name, keyring=keyring)
    answer = kind.challenge(await _inbound_request(request), view)
    if answer is None:
        return JSONResponse(
            {"error": "Method not allowed", "message": f"{kind.name} channels take POST only"},
            status_code=405,
        )
    return answer


async def _accept(
    db: AsyncSession,
    kind: ChannelType,
    channel: ChannelView,
    agent: Agent,
    message: Inbound,
    keyring: KeyRing,
    effects: Effects,
) -> AcceptedInbound | None:
    """Store one message (or find it stored); None when it is dropped or ignored."""
    payload_id = message.dedupe_key.split(":", 2)[-1]
    earlier = await service.find_by_dedupe_key(db, message.dedupe_key)
    if earlier is not None:
        return AcceptedInbound(earlier.id, earlier.thread_id, duplicate=True, payload_id=payload_id)
    if agent.status != "running":
        if kind.answers_errors_to_sender:
            raise AgentNotRunningError(agent)
        _log_dropped(db, channel, f"the agent is {agent.status}", contact=message.contact)
        return None
    answer = (
        InstantAnswer(message.instant_reply, why="the channel answers this itself")
        if message.instant_reply is not None
        else None
    )
    if kind.has_access_policy:
        decision = await access.decide(db, channel, message)
        if decision.verdict == "ignore":
            _log_dropped(
                db, channel, "the contact may not talk to the agent", contact=message.contact
            )
            return None
        if decision.verdict == "refuse":
            answer = InstantAnswer(
                access.refusal_text(channel), why="access policy", status="refused"
            )
        elif decision.verdict == "paired":
            answer = InstantAnswer(access.paired_text(channel), why="paired with a code")
    accepted = await service.accept_inbound(
        db,
        agent=agent,
        channel_key=kind.channel_key(channel.id),
        contact=message.contact,
        text=message.text,
        keyring=keyring,
        dedupe_key=message.dedupe_key,
        external_id=message.reference,
        sent_at=message.sent_at,
        answer=answer,
    )
    if accepted.duplicate:  # stored concurrently by the provider's retry
        return AcceptedInbound(
            accepted.message.id, accepted.thread.id, duplicate=True, payload_id=payload_id
        )
    if answer is not None and answer.status == "refused":  # told once, for a message kept
        await _tell_owner_of_refusal(db, effects, channel, message)
    accepted.message.stream = message.stream
    if kind.pushes_replies and (answer is not None or kind.waits_for_turn(channel)):
        row = delivery.new_delivery(
            inbound_id=accepted.message.id, agent_id=agent.id, channel_id=channel.id
        )
        db.add(row)
        if answer is not None:  # nothing to wait for
            row.status = "queued"
            enqueue(db, delivery.deliver, row.id)
    if answer is None:
        enqueue_thread(db, accepted.thread.id)
    return AcceptedInbound(
        accepted.message.id, accepted.thread.id, duplicate=False, payload_id=payload_id
    )


def _log_dropped(
    db: AsyncSession, channel: ChannelView, reason: str, *, contact: str | None = None
) -> None:
    who = f" from {contact}" if contact else ""
    log_event(
        db,
        agent_id=channel.agent_id,
        event="inbound.dropped",
        level="warning",
        message=f"A {channel.type} message{who} was not taken: {reason}",
        details={"channel_id": channel.id},
    )


async def _tell_owner_of_refusal(
    db: AsyncSession, effects: Effects, channel: ChannelView, message: Inbound
) -> None:
    who = f"{message.contact_name} ({message.contact})" if message.contact_name else message.contact
    if access.policy_of(channel) == "pairing":
        step = "To let them in, make a pairing code for the channel and give it to them."
    else:
        step = "To let them in, add their id to the channel's allowlist."
    await tell_owner(
        db,
        effects,
        agent_id=channel.agent_id,
        kind="channel.contact_refused",
        title=f"Someone wants to talk to {{agent}} on {channel.type.capitalize()}",
        body=f"{who} wrote to your agent {{agent!r}} on {channel.type.capitalize()} and was "
        f"told politely that it does not talk to them. {step}",
        dedupe_key=f"channel:{channel.id}:refused:{message.contact}",
    )


def inbound_router() -> APIRouter:
    """A POST (and GET, for verification handshakes) route per registered channel type that
    takes inbound requests; built when the app is, after every type registered itself."""
    router = APIRouter(prefix="/hooks", tags=["channels"])
    for kind in registered_types().values():
        if not kind.inbound_route:
            continue
        router.add_api_route(
            f"/{kind.name}/{{channel_id}}",
            _post_handler(kind),
            methods=["POST"],
            name=f"receive_{kind.name}",
            summary=f"An inbound request from the {kind.name} provider",
            openapi_extra=kind.openapi_extra,
            responses=kind.inbound_responses,
        )
        if type(kind).challenge is not ChannelType.challenge:
            router.add_api_route(
                f"/{kind.name}/{{channel_id}}",
                _get_handler(kind),
                methods=["GET"],
                name=f"verify_{kind.name}",
                summary=f"The {kind.name} provider's subscription check",
                openapi_extra=kind.challenge_openapi_extra,
            )
    return router


def _post_handler(kind: ChannelType) -> Any:
    async def handler(channel_id: str, request: Request, db: DbSession) -> Response:
        return await receive(kind, channel_id, request, db)

    handler.__doc__ = kind.inbound_doc
    return handler


def _get_handler(kind: ChannelType) -> Any:
    async def handler(channel_id: str, request: Request, db: DbSession) -> Response:
        return await challenge(kind, channel_id, request, db)

    return handler
