"""The channel contract: what every channel type implements, and the registry that maps a type
name to its implementation.

A channel type turns a provider's inbound request into `Inbound` messages and `StatusUpdate`s
(`verify`, `parse`), sends a reply (`send`, which splits at the provider's limit and reports a
`SendOutcome`), registers with the provider on deploy and unregisters on stop (`register`,
`unregister`), and may show that the agent is answering (`answering`: typing indicators,
streamed drafts). The inbox (`channel.inbox`), the deliveries (`channel.delivery`) and the
registrations (`channel.registration`) know only this contract; the runtime knows none of it.
Adding a channel type is one module that subclasses `ChannelType` and calls `register_type`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from fastapi import Request
    from starlette.responses import Response

    from lunogen.channel.schemas import ChannelInBase, ChannelOutBase
    from lunogen.config import Settings
    from lunogen.kit.http import SafeHttp
    from lunogen.runtime.events import TurnEvents


# What a request brings in -----------------------------------------------------------------


@dataclass(frozen=True)
class InboundRequest:
    """A provider's HTTP request, as the channel type sees it (no framework objects)."""

    method: str
    headers: Mapping[str, str]  # looked up case-insensitively
    query: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Attachment:
    """Something a contact sent besides text, named and not downloaded."""

    kind: str  # image, audio, video, document, sticker, location, contacts, ...
    provider_id: str | None = None
    mime_type: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Inbound:
    """One message from a contact, in the platform's terms.

    `dedupe_key` is the provider's unique id of the delivery (Telegram's `update_id`, WhatsApp's
    `wamid`): a provider retrying a delivery is answered once. `reference` is the provider's id
    of the message itself (to reply to it or mark it read). `instant_reply`, when set, answers
    the message at once without a model turn (a `/start` greeting, "only text for now").
    """

    contact: str
    text: str
    dedupe_key: str
    sent_at: datetime | None = None
    contact_name: str | None = None
    reference: str | None = None
    attachments: tuple[Attachment, ...] = ()
    instant_reply: str | None = None
    stream: bool = False  # the turn streams its reply (for drafts shown while it is written)


@dataclass(frozen=True)
class StatusUpdate:
    """The provider's news about a message we sent (`external_id` is its id for it)."""

    external_id: str
    status: Literal["sent", "delivered", "read", "failed"]
    at: datetime | None = None
    error_code: int | None = None
    error: str | None = None
    # The provider refused the message after accepting it because the contact's service window
    # had closed (WhatsApp's 131047): the reply did not go out, and is held like one refused
    # when sent.
    window_closed: bool = False


@dataclass
class Parsed:
    messages: list[Inbound] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # why parts of the request were skipped


class InboundRejected(Exception):
    """The request is refused before anything is stored: `status` is the HTTP answer."""

    def __init__(
        self, status: int, error: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details  # validation errors: answered as the API's 422


# A channel as the types see it ------------------------------------------------------------


@dataclass(frozen=True)
class ChannelView:
    """A channel row with its secrets decrypted (never logged, never returned)."""

    id: str
    agent_id: str
    agent_name: str
    type: str
    config: Mapping[str, Any]
    secrets: Mapping[str, str] = field(repr=False)
    registration: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderContext:
    """What a type needs to call its provider: the SSRF-safe HTTP kit and the settings."""

    settings: Settings
    http: SafeHttp

    @property
    def public_url(self) -> str:
        return self.settings.public_url.rstrip("/")


# Registration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What a successful registration keeps: secrets it made (sealed with the channel's) and
    public facts shown to the owner (the bot's name, the phone number's display name)."""

    secrets: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


class RegistrationFailed(Exception):
    """The provider refused; the text is its reason, shown to the owner (`Deploy failed: ...`)."""


# Sending ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One delivery to make: a reply, or (no reply will come) a failure notice.

    `parts_sent` parts of it went out in earlier attempts: a type that splits a long reply
    resumes after them, so a retry never repeats a part the provider accepted.
    """

    delivery_id: str  # stable across attempts: the idempotency key where the provider takes one
    kind: Literal["reply", "failure"]
    text: str  # the reply, or why the turn failed
    contact: str
    agent_id: str
    inbound_id: str
    inbound_reference: str | None  # the provider's id of the message answered
    inbound_payload_id: str | None  # the sender's own id of it (webhook channel)
    contact_wrote_at: datetime  # when the contact last wrote on this thread (service windows)
    reply_id: str | None
    created_at: datetime
    parts_sent: int = 0


SendResult = Literal["delivered", "retry", "failed", "disable_channel", "held", "blocked"]


@dataclass(frozen=True)
class SendOutcome:
    """How an attempt ended.

    `delivered`: the provider accepted every part. `retry`: try again later (`retry_after`
    seconds at least, when the provider said). `failed`: never (the error says why).
    `disable_channel`: the channel cannot send any more (a 410, an expired token) until the
    owner acts; the owner is told. `held`: the provider's rules forbid sending it now (outside a
    service window with no template): kept, logged, the owner told. `blocked`: the contact
    blocked the agent; nothing more is sent to them until they write again.
    """

    result: SendResult
    error: str | None = None
    status_code: int | None = None
    retry_after: float | None = None
    parts_sent: int = 0
    external_ids: tuple[str, ...] = ()


# The interface ------------------------------------------------------------------------------


class ChannelType:
    """The base of every channel type; subclasses override what their provider offers.

    `pushes_replies`: replies go out through delivery jobs (`send`); otherwise the request that
    brought the message answers it (the API, the web chat). `registers`: deploy calls
    `register` and stop calls `unregister`. `inbound_route`: inbound requests arrive at
    `/hooks/<name>/<channel id>` and go through `verify` and `parse`.
    """

    name: ClassVar[str]
    input_model: ClassVar[type[ChannelInBase] | None] = None
    output_model: ClassVar[type[ChannelOutBase] | None] = None
    pushes_replies: ClassVar[bool] = False
    registers: ClassVar[bool] = False
    inbound_route: ClassVar[bool] = False
    max_inbound_bytes: ClassVar[int] = 256_000
    # Access policies (open / allowlist / pairing) apply to channels whose contacts are people
    # on a provider (not to signed machine callers or anonymous visitors).
    has_access_policy: ClassVar[bool] = False
    # A machine sender that can act on errors (the webhook) is told why a message was refused
    # (409 agent not running, channel disabled); a provider (Telegram, WhatsApp) would only
    # retry, so it gets 200 and the message is logged as dropped.
    answers_errors_to_sender: ClassVar[bool] = False
    # The inbound route's documentation: extra OpenAPI (headers, body schema), responses.
    openapi_extra: ClassVar[dict[str, Any] | None] = None
    challenge_openapi_extra: ClassVar[dict[str, Any] | None] = None
    inbound_responses: ClassVar[dict[int | str, dict[str, Any]] | None] = None
    inbound_doc: ClassVar[str | None] = None

    def channel_key(self, channel_id: str | None) -> str:
        """The threads' `channel_key` for this channel."""
        return self.name if channel_id is None else f"{self.name}:{channel_id}"

    # Inbound
    def challenge(self, request: InboundRequest, channel: ChannelView) -> Response | None:
        """Answer a provider's verification GET (WhatsApp's hub.challenge); None: not offered."""
        return None

    def verify(self, request: InboundRequest, channel: ChannelView) -> None:
        """Raise `InboundRejected` (401) unless the request comes from the provider."""
        raise InboundRejected(405, "Not supported", f"{self.name} channels take no requests")

    def parse(self, request: InboundRequest, channel: ChannelView) -> Parsed:
        """The messages and statuses of a verified request; `InboundRejected` (400) if malformed."""
        raise InboundRejected(405, "Not supported", f"{self.name} channels take no requests")

    async def respond(
        self,
        request: Request,
        channel: ChannelView,
        accepted: list[AcceptedInbound],
        commit: Callable[[], Coroutine[Any, Any, None]],
    ) -> Response:
        """The HTTP answer once the request's messages are stored; it must `commit()` them
        (default: commit, then 200 `{"ok":true}`)."""
        from fastapi.responses import JSONResponse

        await commit()
        return JSONResponse({"ok": True})

    def waits_for_turn(self, channel: ChannelView) -> bool:
        """Whether each accepted message gets a delivery waiting for its turn's reply."""
        return self.pushes_replies

    # Outbound
    def failure_notice(self, channel: ChannelView) -> str | None:
        """What a contact is sent when their message could not be answered; None: nothing."""
        return None

    async def send(
        self, ctx: ProviderContext, channel: ChannelView, outgoing: Outgoing
    ) -> SendOutcome:
        return SendOutcome("failed", error=f"{self.name} channels do not send replies")

    @asynccontextmanager
    async def answering(
        self, ctx: ProviderContext, channel: ChannelView, turn: AnsweringTurn
    ) -> AsyncIterator[None]:
        """Runs around a turn that answers one of this channel's contacts: typing indicators,
        streamed drafts. Errors here never fail the turn (the caller logs them)."""
        yield

    def proactive_refusal(self, *, last_inbound_at: datetime | None, now: datetime) -> str | None:
        """Why the agent may not write first to a contact of this channel now (a schedule's
        proactive run), in words for the owner; None: it may. `last_inbound_at`: when the
        contact last wrote (None: never). Default: only a type that pushes replies, and only
        to a contact who wrote before."""
        if not self.pushes_replies:
            return f"{self.name} channels only answer the request that brought a message"
        if last_inbound_at is None:
            return "the contact never wrote to the agent on this channel"
        return None

    # Provider registration
    async def register(self, ctx: ProviderContext, channel: ChannelView) -> Registration:
        return Registration()

    async def unregister(self, ctx: ProviderContext, channel: ChannelView) -> None:
        return None


@dataclass(frozen=True)
class AcceptedInbound:
    """A message of the request, as stored: `duplicate` when the provider sent it before."""

    message_id: str
    thread_id: str
    duplicate: bool
    payload_id: str | None = None  # the sender's id of it (webhook channel)


@dataclass(frozen=True)
class AnsweringTurn:
    """The turn `answering` wraps: the message answered, and its live events (for drafts)."""

    inbound_id: str
    contact: str
    reference: str | None
    streams: bool  # the turn publishes `delta` events as the reply is written
    events: TurnEvents | None = None  # follow(inbound_id) yields them


# The registry --------------------------------------------------------------------------------

_types: dict[str, ChannelType] = {}


def register_type(channel_type: ChannelType) -> ChannelType:
    """Make `channel_type` known by its name (each channel module does this when imported)."""
    _types[channel_type.name] = channel_type
    return channel_type


def channel_type(name: str) -> ChannelType | None:
    return _types.get(name)


def registered_types() -> dict[str, ChannelType]:
    return dict(_types)


def type_of_channel_key(channel_key: str) -> tuple[ChannelType, str | None] | None:
    """The type and channel id of a thread's `channel_key` (`<type>` or `<type>:<channel id>`)."""
    name, _, channel_id = channel_key.partition(":")
    found = _types.get(name)
    if found is None:
        return None
    return found, channel_id or None
