"""`POST /v1/chat/completions` and `GET /v1/models`: an agent behind OpenAI's API.

Any OpenAI SDK or chat front-end talks to an agent with an `lg_live_` key that has
`agents:execute`. A request's last message goes to the agent as an inbound message on the
`openai` channel, in the thread of its contact (`schemas.contact_of`); the answer is the
agent's reply, whole or streamed as `chat.completion.chunk`s.

The routes are left out of the OpenAPI document: they follow OpenAI's published format (error
shape included), not ours, and are documented in docs/channels.md.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response, StreamingResponse

from lunogen.agent.models import Agent
from lunogen.auth.dependencies import Authenticator, bearer_scheme
from lunogen.auth.principal import Principal
from lunogen.auth.scopes import Scope
from lunogen.channel.contract import ChannelType, register_type
from lunogen.channel.openai_compat import agents, replies, schemas
from lunogen.channel.openai_compat.errors import KEY_REQUIRED, OpenAIError, OpenAIRoute
from lunogen.channel.routes import publish
from lunogen.db import DbSession
from lunogen.kit.crypto import KeyRing
from lunogen.kit.middleware import RouteBodyLimit
from lunogen.kit.time import as_utc
from lunogen.runtime import service, waiting
from lunogen.runtime.events import Subscription, TurnEvent, TurnEvents
from lunogen.runtime.tasks import enqueue_thread


class OpenAiChannelType(ChannelType):
    """Configured by no agent: every running agent answers OpenAI clients holding its owner's
    keys, in the response (no deliveries, no provider registration)."""

    name = "openai"


OPENAI = register_type(OpenAiChannelType())
CHANNEL_KEY = OPENAI.channel_key(None)
MAX_BODY_BYTES = 4 * 1024 * 1024  # clients send the whole history, which is then ignored
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

router = publish(
    APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute),
    body_limits=[RouteBodyLimit("POST", "/v1/chat/completions", MAX_BODY_BYTES)],
)
_agents_execute = Authenticator(Scope.AGENTS_EXECUTE)


async def _key_holder(
    request: Request,
    db: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """A developer key with `agents:execute`, counted against its plan's rate limit. A browser
    session is not enough: OpenAI clients send keys, and the default conversation is the key's."""
    if credentials is None:
        raise OpenAIError(KEY_REQUIRED, status_code=401, code="invalid_api_key")
    return await _agents_execute(request, db, credentials, None)


KeyHolder = Annotated[Principal, Depends(_key_holder)]


async def accept_message(
    session: AsyncSession,
    *,
    agent: Agent,
    contact: str,
    text: str,
    keyring: KeyRing,
    stream: bool,
) -> service.Accepted:
    """The channel's one way in: store `text` from `contact` as pending work in the agent's
    `openai` thread for that contact. Raises 409 when the agent is not running. The caller
    enqueues the thread after commit."""
    accepted = await service.accept_inbound(
        session,
        agent=agent,
        channel_key=CHANNEL_KEY,
        contact=contact,
        text=text,
        keyring=keyring,
    )
    accepted.message.stream = stream
    return accepted


def _created(value: Any) -> int:
    return int(as_utc(value).timestamp())


@router.get("/models", include_in_schema=False)
async def list_models(principal: KeyHolder, db: DbSession) -> JSONResponse:
    """The caller's agents as models (`agent/<agent id>`), newest first, whatever their state."""
    rows = await agents.list_models(db, owner_id=principal.user.id)
    data = [
        schemas.model_body(
            agent_id=agent_id,
            name=name,
            slug=agents.slug_of(name),
            status=status,
            created=_created(created_at),
        )
        for agent_id, name, status, created_at in rows
    ]
    return JSONResponse({"object": "list", "data": data})


@router.get("/models/{model:path}", include_in_schema=False)
async def get_model(model: str, principal: KeyHolder, db: DbSession) -> JSONResponse:
    """One agent as a model, named by id or slug."""
    agent = await agents.resolve_agent(db, owner_id=principal.user.id, model=model)
    return JSONResponse(
        schemas.model_body(
            agent_id=agent.id,
            name=agent.name,
            slug=agents.slug_of(agent.name),
            status=agent.status,
            created=_created(agent.created_at),
        )
    )


@router.post("/chat/completions", include_in_schema=False)
async def create_chat_completion(
    data: schemas.ChatCompletionRequest,
    request: Request,
    principal: KeyHolder,
    db: DbSession,
    contact_header: Annotated[str | None, Header(alias="X-LunoGen-Contact")] = None,
) -> Response:
    """Send the agent the last message and answer with its reply, whole or streamed."""
    schemas.check_supported(data)
    text = schemas.inbound_text(data.messages)
    assert principal.key_id is not None  # `KeyHolder` takes keys only
    contact = schemas.contact_of(header=contact_header, user=data.user, key_id=principal.key_id)
    agent = await agents.resolve_agent(db, owner_id=principal.user.id, model=data.model)
    keyring: KeyRing = request.app.state.keyring
    events: TurnEvents = request.app.state.turn_events
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    streaming = bool(data.stream)
    accepted = await accept_message(
        db, agent=agent, contact=contact, text=text, keyring=keyring, stream=streaming
    )
    message_id, thread_id = accepted.message.id, accepted.thread.id
    following = AsyncExitStack()
    # Follow before the job exists, so that no event of the turn can be missed.
    subscription = await following.enter_async_context(events.follow(message_id))
    try:
        enqueue_thread(db, thread_id)
        await db.commit()
    except BaseException:
        await following.aclose()
        raise
    answer = _Answer(
        sessionmaker=sessionmaker,
        keyring=keyring,
        subscription=subscription,
        message_id=message_id,
        thread_id=thread_id,
        model=data.model,
        created=int(time.time()),
    )
    if streaming:
        return await answer.stream(following, include_usage=data.include_usage)
    async with following:
        return await answer.whole()


class _Answer:
    """The reply to one accepted message, for the client that sent it."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        subscription: Subscription,
        message_id: str,
        thread_id: str,
        model: str,
        created: int,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.keyring = keyring
        self.subscription = subscription
        self.message_id = message_id
        self.thread_id = thread_id
        self.model = model
        self.created = created
        self.deadline = time.monotonic() + replies.WAIT_SECONDS

    @property
    def headers(self) -> dict[str, str]:
        return replies.ids_headers(self.message_id, self.thread_id)

    async def _failure(self) -> OpenAIError:
        inbound, _ = await waiting.exchange(self.sessionmaker, self.message_id)
        return replies.failure_error(inbound, self.thread_id)

    async def whole(self) -> JSONResponse:
        inbound, reply = await waiting.wait_for_reply(
            self.sessionmaker,
            self.subscription,
            self.message_id,
            replies.WAIT_SECONDS,
            check_first=False,  # just accepted: its turn ends after we followed it
        )
        if reply is None:
            raise replies.failure_error(inbound, self.thread_id)
        body = schemas.completion_body(
            message_id=self.message_id,
            created=self.created,
            model=self.model,
            text=self.keyring.decrypt(reply.content),
            usage=await replies.usage_of(self.sessionmaker, self.message_id),
        )
        return JSONResponse(body, headers=self.headers)

    async def stream(self, following: AsyncExitStack, *, include_usage: bool) -> Response:
        """Wait for the turn's first event (up to `FIRST_EVENT_SECONDS`) before answering, so
        that a turn refused at once is an HTTP error; then stream the rest."""
        turn = replies.follow(
            self.sessionmaker,
            self.keyring,
            self.subscription,
            message_id=self.message_id,
            deadline=self.deadline,
        )
        first: TurnEvent | None = None
        choose_by = time.monotonic() + replies.FIRST_EVENT_SECONDS
        try:
            while first is None and time.monotonic() < choose_by:
                event = await anext(turn)
                if event is None or replies.is_retry(event):
                    continue  # nothing sent yet: a retried turn is waited for
                if replies.is_failure(event):
                    raise await self._failure()
                first = event
        except BaseException:
            await turn.aclose()
            await following.aclose()
            raise
        writer = replies.ChunkWriter(
            message_id=self.message_id,
            created=self.created,
            model=self.model,
            include_usage=include_usage,
        )
        return StreamingResponse(
            self._lines(writer, first, turn, following),
            media_type="text/event-stream",
            headers={**STREAM_HEADERS, **self.headers},
        )

    async def _lines(
        self,
        writer: replies.ChunkWriter,
        first: TurnEvent | None,
        turn: AsyncGenerator[TurnEvent | None, None],
        following: AsyncExitStack,
    ) -> AsyncIterator[str]:
        try:
            yield writer.chunk({"role": "assistant", "content": ""})
            text = replies.StreamedText()
            quiet_since = time.monotonic()
            pending = [first] if first is not None else []
            while True:
                event = pending.pop() if pending else await anext(turn)
                if event is None:
                    if time.monotonic() - quiet_since >= waiting.KEEPALIVE_SECONDS:
                        yield ": keep-alive\n\n"
                        quiet_since = time.monotonic()
                    continue
                quiet_since = time.monotonic()
                if event.event == "delta":
                    sent = text.delta(str(event.data.get("text") or ""))
                    if sent:
                        yield writer.chunk({"content": sent})
                elif event.event == "tool":
                    if event.data.get("status") == "started":
                        text.tool_ran()
                elif replies.is_retry(event):
                    if text.sent:  # what was sent cannot be taken back
                        yield replies.data_line(replies.interrupted_error(self.thread_id).body())
                        return
                elif replies.is_failure(event):
                    yield replies.data_line((await self._failure()).body())
                    return
                elif event.event == "done":
                    rest = text.rest_of(str(event.data.get("text") or ""))
                    if rest:
                        yield writer.chunk({"content": rest})
                    yield writer.chunk({}, finish_reason="stop")
                    if writer.include_usage:
                        usage = await replies.usage_of(self.sessionmaker, self.message_id)
                        yield writer.chunk(None, usage=usage)
                    yield replies.DONE_LINE
                    return
        finally:
            await turn.aclose()
            await following.aclose()
