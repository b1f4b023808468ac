"""Typed channel configs: what a client sends (`...In`) and what the API shows (`...Channel`).

Each input model declares its secret fields (`secret_fields`, stored only encrypted, never
returned) and the secrets the platform generates for it (`generated_secrets`; those listed in
`reveal_once` are shown once, in the response that created the channel). Every other field is
public config, stored as JSON and returned as is.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lunogen.account.plans import PlanLimits
from lunogen.channel.fields import Storable, invalid, secret_rule

CHANNEL_TYPES = ("webhook", "whatsapp", "telegram", "webchat")
_TELEGRAM_TOKEN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{30,64}$")


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _http_url(value: str) -> str:
    # Syntax only: the sender resolves the host and refuses non-public addresses (SSRF rules)
    # when it connects, since DNS can change between now and then.
    if any(c.isspace() or not c.isprintable() for c in value):
        raise invalid("must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise invalid("must be a valid URL") from exc
    if parts.scheme not in ("http", "https"):
        raise invalid("must be an http:// or https:// URL")
    if not parts.hostname:
        raise invalid("must include a host name")
    if parts.username is not None or parts.password is not None:
        raise invalid("must not contain credentials; they would be stored in plain text")
    if parts.fragment:
        raise invalid("must not contain a #fragment")
    if port == 0:
        raise invalid("must not use port 0")
    return value


def _origin(value: str) -> str:
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise invalid("must be an origin such as https://example.com") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("must be an origin such as https://example.com")
    if parts.username is not None or parts.password is not None:
        raise invalid("must not contain credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise invalid("must be an origin only (scheme://host[:port]), without a path")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _telegram_token(value: SecretStr) -> SecretStr:
    if not _TELEGRAM_TOKEN.match(value.get_secret_value()):
        raise invalid("must look like '123456789:AA…' (the token @BotFather gave you)")
    return value


HttpUrl = Annotated[str, StringConstraints(max_length=2048), Storable, AfterValidator(_http_url)]
Origin = Annotated[str, StringConstraints(max_length=300), Storable, AfterValidator(_origin)]


# Inputs ------------------------------------------------------------------------------------

ContactId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), Storable
]


class AccessPolicy(BaseModel):
    """Who may talk to the agent on a messaging channel."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["open", "allowlist", "pairing"] = Field(
        description="`open`: anyone. `allowlist`: only the contact ids listed. `pairing`: only "
        "people who sent a pairing code you made "
        "(`POST /api/v1/agents/{agent_id}/channels/{channel_id}/pairing-codes`). Anyone else "
        "gets one polite refusal, then silence, and you a notification."
    )
    allowlist: list[ContactId] = Field(
        default_factory=list,
        max_length=1000,
        description="Contact ids allowed to talk (Telegram chat ids, WhatsApp numbers as wa_id "
        "digits). With `pairing`, they are let in without a code too.",
    )


_REPLY_TEXT = Annotated[str, StringConstraints(max_length=1000), Storable]


class ChannelInBase(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    secret_fields: ClassVar[tuple[str, ...]] = ()
    generated_secrets: ClassVar[dict[str, Callable[[], str]]] = {}
    reveal_once: ClassVar[frozenset[str]] = frozenset()

    type: str
    id: Annotated[str, StringConstraints(max_length=36), Storable] | None = Field(
        default=None,
        description=(
            "On PATCH, the id of one of this agent's channels to keep it: secret fields you "
            "omit keep their stored values. Leave it out to add a new channel."
        ),
    )

    def public_config(self) -> dict[str, Any]:
        """The fields stored as plain JSON (everything but the id, the type and the secrets)."""
        return self.model_dump(mode="json", exclude={"id", "type", *self.secret_fields})

    def supplied_secrets(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for name in self.secret_fields:
            value = getattr(self, name)
            if value is not None:
                values[name] = value.get_secret_value()
        return values

    @classmethod
    def all_secret_fields(cls) -> tuple[str, ...]:
        return (*cls.secret_fields, *cls.generated_secrets)

    def plan_problem(self, limits: PlanLimits) -> tuple[str, str] | None:
        """Why the owner's plan does not allow this configuration, and what to change, or None."""
        return None


class WebhookChannelIn(ChannelInBase):
    """Standard Webhooks. The platform generates the `whsec_…` signing secret."""

    generated_secrets: ClassVar[dict[str, Callable[[], str]]] = {"secret": new_webhook_secret}
    reveal_once: ClassVar[frozenset[str]] = frozenset({"secret"})

    type: Literal["webhook"]
    mode: Literal["sync", "async"] = Field(
        default="sync",
        description=(
            "`sync`: the reply comes back in the HTTP response to your POST. `async`: the POST "
            "is accepted at once and the reply is POSTed to `callback_url`, signed."
        ),
    )
    callback_url: HttpUrl | None = Field(
        default=None, description="Where replies are POSTed (http or https); required for async."
    )

    @model_validator(mode="after")
    def _async_needs_callback(self) -> WebhookChannelIn:
        if self.mode == "async" and self.callback_url is None:
            raise PydanticCustomError(
                "callback_url_required", "callback_url is required when mode is 'async'"
            )
        return self


class WhatsappChannelIn(ChannelInBase):
    """WhatsApp Business Cloud API (Meta Graph API)."""

    secret_fields: ClassVar[tuple[str, ...]] = ("access_token", "app_secret", "verify_token")

    type: Literal["whatsapp"]
    phone_number_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,32}$")] = Field(
        description="The WhatsApp phone number id from Meta's app dashboard (digits)."
    )
    access_token: Annotated[SecretStr, secret_rule(max_length=2000)] | None = Field(
        default=None, description="Secret. A system-user access token; required for a new channel."
    )
    app_secret: Annotated[SecretStr, secret_rule(max_length=200)] | None = Field(
        default=None,
        description="Secret. The Meta app secret that signs inbound deliveries; required for a "
        "new channel.",
    )
    verify_token: Annotated[SecretStr, secret_rule(max_length=200)] | None = Field(
        default=None,
        description="Secret. The token you enter in Meta's webhook setup; required for a new "
        "channel.",
    )
    api_version: Annotated[str, StringConstraints(pattern=r"^v[0-9]{1,3}\.[0-9]{1,2}$")] = Field(
        default="v21.0", description="Graph API version, e.g. v21.0."
    )
    access: AccessPolicy = Field(
        default_factory=lambda: AccessPolicy(policy="open"),
        description="Who may talk to the agent. Default `open`: a business number serves its "
        "customers.",
    )
    template_name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,512}$")] | None = Field(
        default=None,
        description="An approved message template sent when a reply is ready more than 24 hours "
        "after the customer last wrote (WhatsApp allows only templates then). Without one, such "
        "replies are kept and you are notified.",
    )
    template_language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")] = (
        Field(default="en_US", description="The template's language code, e.g. en_US.")
    )


class TelegramChannelIn(ChannelInBase):
    """A Telegram bot. Its webhook is registered when the agent is deployed or started and
    removed when it stops."""

    secret_fields: ClassVar[tuple[str, ...]] = ("bot_token",)

    type: Literal["telegram"]
    bot_token: (
        Annotated[SecretStr, secret_rule(max_length=100), AfterValidator(_telegram_token)] | None
    ) = Field(
        default=None,
        description="Secret. The token from @BotFather (`123456789:AA…`); required for a new "
        "channel.",
    )
    access: AccessPolicy = Field(
        default_factory=lambda: AccessPolicy(policy="pairing"),
        description="Who may talk to the bot. Default `pairing`: a Telegram bot can be found by "
        "anyone, and every answer costs your credits.",
    )
    groups: Literal["mention", "all", "off"] = Field(
        default="mention",
        description="In group chats: answer only messages that mention the bot or reply to it "
        "(`mention`), every message (`all`), or none (`off`).",
    )
    greeting: _REPLY_TEXT = Field(
        default="", description="The answer to /start; empty: a short hello naming the agent."
    )
    stream_drafts: bool = Field(
        default=True,
        description="In private chats, show the reply as it is written (Telegram's message "
        "drafts), then send it whole.",
    )


class WebchatChannelIn(ChannelInBase):
    """The embeddable web chat. Its hosted page on LunoGen's own origin is always allowed."""

    type: Literal["webchat"]
    allowed_origins: list[Origin] = Field(
        default_factory=list,
        max_length=20,
        description="Sites allowed to embed the chat, as origins: https://example.com[:port].",
    )
    title: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), Storable
    ] = Field(default="Chat", description="Shown in the chat window's header.")
    greeting: Annotated[str, StringConstraints(max_length=1000), Storable] = Field(
        default="", description="The first message shown to a visitor, if any."
    )
    hide_powered_by: bool = Field(
        default=False,
        description='Hide the "Powered by LunoGen" link (Pro plan).',
    )

    def plan_problem(self, limits: PlanLimits) -> tuple[str, str] | None:
        if self.hide_powered_by and not limits.hide_powered_by:
            problem = f'Your {limits.label} plan shows the "Powered by LunoGen" link in web chats'
            return problem, "set hide_powered_by to false"
        return None


def _known_type(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get("type")
        if kind is None:
            raise PydanticCustomError(
                "channel_type_missing",
                "each channel needs a 'type': one of {expected}",
                {"expected": ", ".join(CHANNEL_TYPES)},
            )
        if kind not in CHANNEL_TYPES:
            raise PydanticCustomError(
                "channel_type_unknown",
                "unknown channel type '{kind}'; expected one of {expected}",
                {"kind": str(kind)[:50], "expected": ", ".join(CHANNEL_TYPES)},
            )
    return value


ChannelIn = Annotated[
    WebhookChannelIn | WhatsappChannelIn | TelegramChannelIn | WebchatChannelIn,
    Field(discriminator="type"),
    BeforeValidator(_known_type),
]


# Outputs -----------------------------------------------------------------------------------


class SecretState(BaseModel):
    """A secret field as the API shows it: only whether it is set."""

    model_config = ConfigDict(extra="forbid")

    configured: bool = True


class RevealedSecret(BaseModel):
    """A secret the platform generated, shown only in the response that created it."""

    model_config = ConfigDict(extra="forbid")

    configured: Literal[True] = True
    value: str = Field(description="Shown only in this response: store it now.")


class ChannelOutBase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    registered_at: datetime | None = Field(
        default=None,
        description="When the provider last accepted this channel (deploy or start); null "
        "while it is not registered.",
    )
    registration: dict[str, Any] | None = Field(
        default=None, description="What the provider told at registration (e.g. the bot's name)."
    )


class WebhookChannel(ChannelOutBase):
    type: Literal["webhook"]
    mode: Literal["sync", "async"]
    callback_url: str | None
    secret: RevealedSecret | SecretState = Field(
        description="The `whsec_…` signing secret: its value appears only when the channel is "
        "created."
    )
    disabled_at: datetime | None = Field(
        default=None,
        description="Set when the callback URL answered 410 Gone: from then on no callback is "
        "sent and inbound messages are refused (409) until the channel is re-enabled with "
        "`POST /api/v1/agents/{agent_id}/channels/{channel_id}/enable` or given a new "
        "`callback_url`.",
    )
    disabled_reason: str | None = Field(default=None, description="Why it was disabled.")


class WhatsappChannel(ChannelOutBase):
    type: Literal["whatsapp"]
    phone_number_id: str
    api_version: str
    access: AccessPolicy = Field(default_factory=lambda: AccessPolicy(policy="pairing"))
    template_name: str | None = None
    template_language: str = "en_US"
    access_token: SecretState
    app_secret: SecretState
    verify_token: SecretState
    disabled_at: datetime | None = None
    disabled_reason: str | None = None


class TelegramChannel(ChannelOutBase):
    type: Literal["telegram"]
    bot_token: SecretState
    access: AccessPolicy = Field(default_factory=lambda: AccessPolicy(policy="pairing"))
    groups: str = "mention"
    greeting: str = ""
    stream_drafts: bool = True
    disabled_at: datetime | None = None
    disabled_reason: str | None = None


class WebchatChannel(ChannelOutBase):
    type: Literal["webchat"]
    allowed_origins: list[str]
    title: str
    greeting: str
    hide_powered_by: bool = False


ChannelOut = Annotated[
    WebhookChannel | WhatsappChannel | TelegramChannel | WebchatChannel,
    Field(discriminator="type"),
]

INPUT_MODELS: dict[str, type[ChannelInBase]] = {
    "webhook": WebhookChannelIn,
    "whatsapp": WhatsappChannelIn,
    "telegram": TelegramChannelIn,
    "webchat": WebchatChannelIn,
}
OUTPUT_MODELS: dict[str, type[ChannelOutBase]] = {
    "webhook": WebhookChannel,
    "whatsapp": WhatsappChannel,
    "telegram": TelegramChannel,
    "webchat": WebchatChannel,
}
