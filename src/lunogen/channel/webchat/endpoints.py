"""The web chat: its public page, the widget script, and the visitor protocol.

Anyone may open `/chat/<channel id>`: the channel id is the chat's publishable id. The page
(framed by the widget on the owner's sites) keeps a random visitor id in its own localStorage
and trades it for a short-lived visitor token (`token.py`) at `POST /chat/<id>/session`; the
token authenticates `POST /chat/<id>/messages` (the reply streams back as server-sent events)
and `GET /chat/<id>/history`. Every JSON request must come from LunoGen's own origin (the
framed page) or one of the channel's `allowed_origins`; the page itself may be framed only by
those (CSP `frame-ancestors`). No cookie is set anywhere on this path.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response, StreamingResponse

from lunogen.account.models import User
from lunogen.account.plans import limits_for
from lunogen.agent.models import Agent, AgentChannel
from lunogen.auth.ratelimit import RateLimiter
from lunogen.channel.fields import Storable
from lunogen.channel.routes import publish
from lunogen.channel.webchat import token as tokens
from lunogen.channel.webchat.kind import WEBCHAT
from lunogen.config import Settings
from lunogen.db import DbSession
from lunogen.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
    validation_response,
)
from lunogen.kit import jsontext
from lunogen.kit.crypto import KeyRing
from lunogen.kit.middleware import RouteBodyLimit
from lunogen.kit.web import ClientInfo
from lunogen.runtime import service, waiting
from lunogen.runtime.events import TurnEvents
from lunogen.runtime.models import Message, Thread
from lunogen.runtime.tasks import enqueue_thread

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates


PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"

MAX_MESSAGE_BODY_BYTES = 256_000  # BodyLimitMiddleware caps (published below)
MAX_SESSION_BODY_BYTES = 4_096
router = publish(
    APIRouter(prefix="/chat", include_in_schema=False),
    body_limits=[
        RouteBodyLimit("POST", "/chat/{channel_id}/messages", MAX_MESSAGE_BODY_BYTES),
        RouteBodyLimit("POST", "/chat/{channel_id}/session", MAX_SESSION_BODY_BYTES),
    ],
)
REPLY_WAIT_SECONDS = 120.0
HISTORY_DEFAULT = 50
HISTORY_MAX = 200

_ORIGIN_SOURCE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")  # safe inside a CSP header
_ASSETS = {
    "widget.js": "text/javascript; charset=utf-8",
    "chat.js": "text/javascript; charset=utf-8",
    "chat.css": "text/css; charset=utf-8",
}


@dataclass(frozen=True)
class WebchatLimits:
    """Moving-window budgets (per minute). Visitor ids are minted by the page, so the budgets per
    channel and per client address are what bound one client that keeps minting new ones."""

    messages_per_visitor: int = 10
    messages_per_channel: int = 120
    sessions_per_address: int = 30
    sessions_per_channel: int = 600
    history_per_visitor: int = 60


LIMITS = WebchatLimits()


_Body = TypeVar("_Body", bound=BaseModel)


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    visitor_id: Annotated[str, StringConstraints(pattern=tokens.VISITOR_ID.pattern)]


class VisitorMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # As the API channel's `MessageIn.text`.
    text: Annotated[str, StringConstraints(min_length=1, max_length=32_000), Storable]
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")] | None = Field(
        default=None,
        description="The page's id for this message: sent again (a retry after a network "
        "failure), it is answered once.",
    )


class HistoryMessage(BaseModel):
    id: str
    role: str
    text: str
    status: str
    reply_to_id: str | None
    created_at: datetime


# Threads ------------------------------------------------------------------------------------


def channel_key(channel_id: str) -> str:
    return WEBCHAT.channel_key(channel_id)


def visitor_contact(visitor_id: str) -> str:
    return f"visitor:{visitor_id}"


async def accept_visitor_message(
    db: AsyncSession,
    *,
    agent: Agent,
    channel: AgentChannel,
    visitor_id: str,
    text: str,
    keyring: KeyRing,
    message_id: str | None = None,
) -> service.Accepted:
    """Store a visitor's message as pending work (streamed) and enqueue its turn.

    The one place a web chat message enters the platform: the turn is sent once the caller
    commits. Raises `AgentNotRunningError` (409) unless the agent is running.
    """
    accepted = await service.accept_inbound(
        db,
        agent=agent,
        channel_key=channel_key(channel.id),
        contact=visitor_contact(visitor_id),
        text=text,
        keyring=keyring,
        dedupe_key=(
            None if message_id is None else f"{WEBCHAT.name}:{channel.id}:{visitor_id}:{message_id}"
        ),
    )
    if not accepted.duplicate:  # a repeat follows the turn of the first
        accepted.message.stream = True
        enqueue_thread(db, accepted.thread.id)
    return accepted


# Checks -------------------------------------------------------------------------------------


def normalize_origin(value: str) -> str | None:
    """`scheme://host[:port]` as browsers send it in `Origin` (lower-case host, no default
    port), or None if `value` is not an http(s) origin."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port == {"http": 80, "https": 443}[parts.scheme]:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def own_origin(settings: Settings) -> str:
    origin = normalize_origin(settings.public_url)
    assert origin is not None  # Settings checks public_url
    return origin


def allowed_origins(channel: AgentChannel, settings: Settings) -> list[str]:
    """LunoGen's own origin first, then the channel's allowlist (normalized, deduplicated)."""
    found = [own_origin(settings)]
    for value in channel.config.get("allowed_origins", []):
        origin = normalize_origin(str(value))
        if origin is not None and origin not in found:
            found.append(origin)
    return found


def _request_origin(request: Request, settings: Settings) -> str | None:
    origin = request.headers.get("origin")
    if origin is not None:
        return origin
    # Browsers send no Origin on a same-origin GET (the page reading its history); Fetch
    # Metadata says where such a request came from.
    if request.headers.get("sec-fetch-site") == "same-origin":
        return own_origin(settings)
    return None


def check_origin(request: Request, channel: AgentChannel) -> None:
    """403 unless the request comes from LunoGen's own origin or one the channel allows."""
    settings: Settings = request.app.state.settings
    origin = _request_origin(request, settings)
    if origin is None:
        raise ForbiddenError(
            "The request has no Origin header: the web chat answers browsers on the sites its "
            "owner allowed.",
            error="Origin not allowed",
        )
    normalized = normalize_origin(origin)
    if normalized is None or normalized not in allowed_origins(channel, settings):
        raise ForbiddenError(
            f"The origin {origin[:200]!r} may not use this chat; its owner can add it to the "
            "channel's allowed_origins.",
            error="Origin not allowed",
            extra={"origin": origin[:200]},
        )


def _not_found() -> NotFoundError:
    return NotFoundError("No web chat has this id.", error="Chat not found")


async def find_webchat(db: AsyncSession, channel_id: str) -> tuple[AgentChannel, Agent]:
    """The web chat channel and its agent (not deleted), else 404."""
    if len(channel_id) > 36:
        raise _not_found()
    row = (
        await db.execute(
            select(AgentChannel, Agent)
            .join(Agent, Agent.id == AgentChannel.agent_id)
            .where(
                AgentChannel.id == channel_id,
                AgentChannel.type == "webchat",
                Agent.deleted_at.is_(None),
            )
        )
    ).one_or_none()
    if row is None:
        raise _not_found()
    return row[0], row[1]


def _check_enabled(channel: AgentChannel) -> None:
    if channel.disabled_at is not None:
        # The reason is the owner's business: the owner sees it in the API and the agent log.
        raise ConflictError("This chat is switched off for now.", error="Channel disabled")


def _check_running(agent: Agent) -> None:
    if agent.status != "running":
        raise service.AgentNotRunningError(agent)


def _visitor(request: Request, channel: AgentChannel) -> tokens.VisitorToken:
    keyring: KeyRing = request.app.state.keyring
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise UnauthorizedError(
            f"Send the visitor token from POST /chat/{channel.id}/session as "
            "'Authorization: Bearer <token>'.",
            error="Visitor token required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return tokens.verify(keyring, value.strip(), channel_id=channel.id)
    except tokens.VisitorTokenError as exc:
        raise UnauthorizedError(
            f"Invalid visitor token: {exc}; get a new one from POST /chat/{channel.id}/session.",
            error="Invalid visitor token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from exc


async def _spend(request: Request, key: str, per_minute: int, refusal: str) -> None:
    limiter: RateLimiter = request.app.state.rate_limiter
    status = await limiter.hit(key, per_minute)
    if not status.allowed:
        raise TooManyRequestsError(
            f"{refusal} (at most {status.limit} a minute); retry in {status.retry_after} s.",
            headers={"Retry-After": str(status.retry_after)},
            extra={"retry_after": status.retry_after},
        )


def _parse(model: type[_Body], body: bytes) -> _Body | Response:
    try:
        data: Any = jsontext.loads(body)
    except ValueError:
        return JSONResponse(
            {"error": "Bad request", "message": "The body must be a JSON object"}, status_code=400
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return validation_response(
            [dict(e) for e in exc.errors(include_url=False, include_input=False)]
        )


# Pages and assets ---------------------------------------------------------------------------


@cache
def _templates() -> Jinja2Templates:
    from fastapi.templating import Jinja2Templates

    return Jinja2Templates(directory=str(TEMPLATES_DIR))


@cache
def _asset(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def page_policy(origins: list[str]) -> str:
    """The app's CSP, except that the page may be framed by LunoGen and the allowed origins."""
    ancestors = " ".join(["'self'", *(o for o in origins if _ORIGIN_SOURCE.match(o))])
    return (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        f"connect-src 'self'; form-action 'self'; frame-ancestors {ancestors}; "
        "base-uri 'none'; object-src 'none'"
    )


def _asset_response(name: str) -> Response:
    return Response(
        _asset(name),
        media_type=_ASSETS[name],
        headers={"Cache-Control": "public, max-age=300"},
    )


@router.get("/widget.js")
async def widget_script() -> Response:
    """The embed script: `<script src=".../chat/widget.js" data-channel="<id>" async>`."""
    return _asset_response("widget.js")


@router.get("/chat.js")
async def chat_script() -> Response:
    return _asset_response("chat.js")


@router.get("/chat.css")
async def chat_stylesheet() -> Response:
    return _asset_response("chat.css")


async def _plan_hides_powered_by(db: AsyncSession, owner_id: str) -> bool:
    owner = await db.get(User, owner_id)
    return owner is not None and limits_for(owner.plan).hide_powered_by


@router.get("/{channel_id}")
async def chat_page(
    channel_id: str,
    request: Request,
    db: DbSession,
    embed: Annotated[bool, Query()] = False,
    host: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    """The chat page; `?embed=1&host=<origin>` when the widget frames it on `host`."""
    settings: Settings = request.app.state.settings
    try:
        channel, agent = await find_webchat(db, channel_id)
    except NotFoundError:
        return _templates().TemplateResponse(
            request, "missing.html", {}, status_code=404, headers={"Cache-Control": "no-store"}
        )
    origins = allowed_origins(channel, settings)
    host_origin = normalize_origin(host) if host else None
    context = {
        "channel_id": channel.id,
        "title": channel.config.get("title") or "Chat",
        "greeting": channel.config.get("greeting") or "",
        "agent_name": agent.name,
        "embed": embed,
        # Where the page may post its `ready`/`close` notes: the framing site, if allowed.
        "host_origin": host_origin if host_origin in origins else "",
        # Hidden only while the owner's plan allows it (a downgrade shows it again).
        "hide_powered_by": bool(channel.config.get("hide_powered_by", False))
        and await _plan_hides_powered_by(db, agent.owner_id),
        # This LunoGen's own home page: the page links to no other host.
        "powered_by_url": settings.public_url + "/",
    }
    return _templates().TemplateResponse(
        request,
        "chat.html",
        context,
        headers={
            "Content-Security-Policy": page_policy(origins),
            "Cache-Control": "no-cache",
        },
    )


# The visitor protocol -----------------------------------------------------------------------


@router.post("/{channel_id}/session")
async def open_session(channel_id: str, request: Request, db: DbSession) -> Response:
    """Trade a visitor id for a visitor token (15 minutes), if the chat takes messages now."""
    keyring: KeyRing = request.app.state.keyring
    channel, agent = await find_webchat(db, channel_id)
    check_origin(request, channel)
    parsed = _parse(SessionIn, await request.body())
    if isinstance(parsed, Response):
        return parsed
    _check_enabled(channel)
    _check_running(agent)
    address = ClientInfo.from_request(request).ip or "unknown"
    await _spend(
        request,
        f"webchat:session:address:{address}",
        LIMITS.sessions_per_address,
        "Too many chat sessions from your network",
    )
    await _spend(
        request,
        f"webchat:session:channel:{channel.id}",
        LIMITS.sessions_per_channel,
        "This chat is very busy",
    )
    value, expires_at = tokens.issue(keyring, channel_id=channel.id, visitor_id=parsed.visitor_id)
    return JSONResponse(
        {
            "token": value,
            "token_type": "Bearer",
            "expires_at": expires_at,
            "expires_in": tokens.TOKEN_SECONDS,
            "visitor_id": parsed.visitor_id,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.post("/{channel_id}/messages")
async def send_visitor_message(channel_id: str, request: Request, db: DbSession) -> Response:
    """Send the agent the visitor's `{text}`; the reply streams back as server-sent events:
    `delta` (text as written), then `done` (the whole reply) or `error`."""
    keyring: KeyRing = request.app.state.keyring
    events: TurnEvents = request.app.state.turn_events
    channel, agent = await find_webchat(db, channel_id)
    check_origin(request, channel)
    visitor = _visitor(request, channel)
    parsed = _parse(VisitorMessageIn, await request.body())
    if isinstance(parsed, Response):
        return parsed
    _check_enabled(channel)
    await _spend(
        request,
        f"webchat:messages:visitor:{channel.id}:{visitor.visitor_id}",
        LIMITS.messages_per_visitor,
        "You are sending messages too fast",
    )
    await _spend(
        request,
        f"webchat:messages:channel:{channel.id}",
        LIMITS.messages_per_channel,
        "This chat is very busy",
    )
    accepted = await accept_visitor_message(
        db,
        agent=agent,
        channel=channel,
        visitor_id=visitor.visitor_id,
        text=parsed.text,
        keyring=keyring,
        message_id=parsed.id,
    )
    following = AsyncExitStack()
    # Follow before the commit that sends the job, so that no event of the turn is missed.
    subscription = await following.enter_async_context(events.follow(accepted.message.id))
    try:
        await db.commit()
    except BaseException:
        await following.aclose()
        raise
    body = waiting.stream_reply(
        request.app.state.sessionmaker,
        keyring,
        subscription,
        message_id=accepted.message.id,
        thread_id=accepted.thread.id,
        wait_seconds=REPLY_WAIT_SECONDS,
    )
    return StreamingResponse(
        _for_visitors(body, following),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


_DELAYED = "The reply is taking longer than usual; it will appear here when it is ready."
_FAILED = "Sorry, no reply could be written just now. Please try again later."


def visitor_event(chunk: str) -> str | None:
    """The API channel's SSE chunk as a visitor may see it: tool activity is not shown, and an
    error says only whether the reply may still come (the reason may be the owner's business:
    credits, the model provider)."""
    if not chunk.startswith("event: "):
        return chunk  # comments: `accepted`, keep-alives
    name, _, rest = chunk[len("event: ") :].partition("\n")
    if name in ("delta", "done"):
        return chunk
    if name != "error":
        return None
    data = json.loads(rest.removeprefix("data: "))
    retrying = bool(data.get("retrying"))
    return waiting.sse(
        "error",
        {
            "message_id": data.get("message_id"),
            "retrying": retrying,
            "error": _DELAYED if retrying else _FAILED,
        },
    )


async def _for_visitors(body: AsyncIterator[str], following: AsyncExitStack) -> AsyncIterator[str]:
    try:
        async for chunk in body:
            shown = visitor_event(chunk)
            if shown is not None:
                yield shown
    finally:
        await following.aclose()


@router.get("/{channel_id}/history")
async def visitor_history(
    channel_id: str,
    request: Request,
    db: DbSession,
    limit: Annotated[int, Query(ge=1, le=HISTORY_MAX)] = HISTORY_DEFAULT,
) -> Response:
    """The visitor's last `limit` messages, oldest first (theirs and the agent's replies)."""
    keyring: KeyRing = request.app.state.keyring
    channel, agent = await find_webchat(db, channel_id)
    check_origin(request, channel)
    visitor = _visitor(request, channel)
    await _spend(
        request,
        f"webchat:history:visitor:{channel.id}:{visitor.visitor_id}",
        LIMITS.history_per_visitor,
        "Too many history reads",
    )
    thread_id = (
        await db.execute(
            select(Thread.id).where(
                Thread.agent_id == agent.id,
                Thread.channel_key == channel_key(channel.id),
                Thread.contact == visitor_contact(visitor.visitor_id),
            )
        )
    ).scalar_one_or_none()
    rows: list[Message] = []
    if thread_id is not None:
        query = (
            select(Message)
            .where(Message.thread_id == thread_id)
            .order_by(Message.seq.desc())
            .limit(limit)
        )
        rows = list((await db.execute(query)).scalars())
        rows.reverse()
    messages = [
        HistoryMessage(
            id=row.id,
            role=row.role,
            text=keyring.decrypt(row.content),
            status=row.status,
            reply_to_id=row.reply_to_id,
            created_at=row.created_at,
        ).model_dump(mode="json")
        for row in rows
    ]
    return JSONResponse({"messages": messages}, headers={"Cache-Control": "no-store"})
