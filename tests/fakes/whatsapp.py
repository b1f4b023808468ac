"""A fake WhatsApp Business Cloud API (Meta Graph API) served over real HTTP on 127.0.0.1.

Served at `<api_base>/<version>/...` (`v23.0`, `v25.0`, ...):

- `GET /{version}/{phone_number_id}` (`Authorization: Bearer <token>` or `?access_token=`, optional
  `fields=`): the phone number object.
- `POST /{version}/{phone_number_id}/messages` (JSON, or a form whose values are JSON): text,
  template and the other message types; mark as read (`status: "read"`), with the typing
  indicator (`typing_indicator: {"type": "text"}`).

Answers and errors are Graph's: `{"error": {"message", "type", "code", "error_subcode"?,
"error_data"?, "fbtrace_id"}}`, code 190 (subcode 463) for an expired token, 100/33 for an
object that does not exist, 100 for a bad or missing parameter, 132001 for a template that is not
approved, 130429/131056 for throughput and pair-rate limits (HTTP 400, as Meta answers them).

The 24-hour customer-service window is kept like Meta keeps it: a free-form message to a user
whose last message is older than 24 hours (or who never wrote) is *accepted* (200, a wamid) and
fails afterwards, in a `statuses` webhook with status `failed` and error 131047; templates go out
regardless. Nothing is pushed by itself: tests deliver the webhooks Meta would send, when they
choose, in the order they choose:

    number = whatsapp.add_number()                      # token, app secret, verify token
    envelope = whatsapp.text_message(number, text="Hi", wa_id="15551234567")
    await whatsapp.deliver(number, envelope, url, client=client)   # signed like Meta
    await whatsapp.deliver(number, envelope, url, signature="invalid")
    wamid = whatsapp.sent(number)[-1].wamid
    await whatsapp.deliver_statuses(number, url, wamid, ["read", "sent", "delivered"])
    whatsapp.throttle(number, code=131056)              # the next send: pair rate limit

Use the `whatsapp` fixture (`from tests.fakes.whatsapp import whatsapp  # noqa: F401`) and
`whatsapp_settings(whatsapp)` for the Settings that point LunoGen at it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import loopback_socket, serve_in_thread

API_VERSION = "v23.0"
MAX_TEXT = 4096
WINDOW_SECONDS = 24 * 3600
SIGNATURE_HEADER = "X-Hub-Signature-256"
ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
MESSAGE_TYPES = (
    "audio",
    "contacts",
    "document",
    "image",
    "interactive",
    "location",
    "reaction",
    "sticker",
    "template",
    "text",
    "video",
)
_VERSION = re.compile(r"v\d{1,2}\.\d")
_ALPHANUMERIC = string.ascii_letters + string.digits

# code → (HTTP status, title, details) for the errors the fake can inject or produce.
ERRORS: dict[int, tuple[int, str, str]] = {
    1: (500, "An unknown error occurred", "Invalid request or possible server error."),
    2: (503, "Service temporarily unavailable", "Temporary due to downtime or overload."),
    4: (400, "Application request limit reached", "The app has reached its API call rate limit."),
    80007: (400, "Rate limit issues", "The WhatsApp Business Account has reached its rate limit."),
    130429: (
        400,
        "Rate limit hit",
        "Cloud API message throughput has been reached.",
    ),
    131056: (
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    131047: (
        400,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last "
        "replied to this number.",
    ),
    131026: (
        400,
        "Message undeliverable",
        "Unable to deliver message. Reasons can include: the recipient phone number is not a "
        "WhatsApp phone number; the recipient has not accepted the new Terms of Service.",
    ),
    132001: (404, "Template name does not exist in the translation", ""),
}


class GraphError(Exception):
    """A request the Graph API refuses; rendered as its `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int,
        type: str = "OAuthException",
        subcode: int | None = None,
        details: str | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.subcode = subcode
        self.details = details
        self.transient = transient

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.transient is not None:
            error["is_transient"] = self.transient
        error["fbtrace_id"] = "A" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(22))
        return {"error": error}

    def response(self) -> JSONResponse:
        headers = {}
        if self.code in (104, 190):
            headers["WWW-Authenticate"] = (
                f'OAuth "Facebook Platform" "invalid_token" "{self.message}"'
            )
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def coded(code: int, details: str | None = None) -> GraphError:
    """The Cloud API error `code` as Graph renders it: `(#code) Title` and `error_data`."""
    status, title, default = ERRORS[code]
    return GraphError(
        status,
        f"(#{code}) {title}",
        code=code,
        details=details if details is not None else default,
        transient=True if status >= 500 else None,
    )


def _param(message: str) -> GraphError:
    return GraphError(400, f"(#100) {message}", code=100)


def _invalid(details: str) -> GraphError:
    return GraphError(400, "(#100) Invalid parameter", code=100, details=details)


def _unknown_object(object_id: str, verb: str) -> GraphError:
    return GraphError(
        400,
        f"Unsupported {verb} request. Object with ID '{object_id}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation. Please read the "
        "Graph API documentation at https://developers.facebook.com/docs/graph-api",
        code=100,
        type="GraphMethodException",
        subcode=33,
    )


def _digits(length: int) -> str:
    return str(secrets.randbelow(9) + 1) + "".join(
        secrets.choice(string.digits) for _ in range(length - 1)
    )


def new_wamid(wa_id: str, *, inbound: bool = False) -> str:
    """A message id shaped like Meta's: `wamid.` + base64 of the user's number and a random id."""
    number = wa_id.encode()
    tail = (
        b"\x15\x02\x00\x12\x18\x20" + secrets.token_hex(16).upper().encode()
        if inbound
        else b"\x15\x02\x00\x11\x18\x12" + secrets.token_hex(9).upper().encode()
    )
    raw = b"\x1c\x18" + bytes([len(number)]) + number + tail + b"\x00"
    return "wamid." + base64.b64encode(raw).decode()


def signature_for(body: bytes, app_secret: str) -> str:
    """`X-Hub-Signature-256`: `sha256=` + hex HMAC-SHA256 of the raw body with the app secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def envelope_bytes(envelope: dict[str, Any]) -> bytes:
    """A webhook body as Meta sends it: compact JSON, non-ASCII escaped (`\\uXXXX`). Verify the
    signature over these bytes, never over a re-serialisation."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=True).encode()


# -- state ------------------------------------------------------------------------------------


@dataclass
class Number:
    phone_number_id: str
    access_token: str
    display_phone_number: str
    verified_name: str
    app_secret: str
    verify_token: str
    waba_id: str
    quality_rating: str = "GREEN"
    templates: set[tuple[str, str]] = field(default_factory=set)  # (name, language code)

    @property
    def metadata_phone(self) -> str:
        """The display number as webhooks carry it (digits only)."""
        return re.sub(r"\D", "", self.display_phone_number)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    version: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: Any  # parsed JSON (or form) body, None when absent
    status: int


@dataclass
class Outbound:
    """A message the API accepted, and what will become of it."""

    phone_number_id: str
    wamid: str
    to: str
    wa_id: str
    payload: dict[str, Any]
    sent_at: float
    error: int | None = None  # the code it will fail with (131047 outside the window)

    @property
    def type(self) -> str:
        return str(self.payload.get("type", "text"))

    @property
    def text(self) -> str | None:
        text = self.payload.get("text")
        return text.get("body") if isinstance(text, dict) else None


@dataclass(frozen=True)
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str]
    status: int | None  # None: the receiver could not be reached
    method: str = "POST"


@dataclass
class FakeWhatsApp:
    root_url: str = ""
    version: str = API_VERSION  # what `url()` uses; every `vNN.N` is served
    numbers: dict[str, Number] = field(default_factory=dict)  # phone number id → number
    requests: list[Recorded] = field(default_factory=list)
    outbound: list[Outbound] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    _expired: set[str] = field(default_factory=set)
    # number id → (code, recipient wa_id or None for any, HTTP status or None), in order
    _throttles: dict[str, list[tuple[int, str | None, int | None]]] = field(default_factory=dict)
    _failures: deque[GraphError] = field(default_factory=deque)
    _last_inbound: dict[tuple[str, str], float] = field(default_factory=dict)
    _inbound_ids: dict[str, tuple[str, str]] = field(default_factory=dict)  # wamid → number, wa
    _read: list[tuple[str, str, bool]] = field(default_factory=list)  # number, wamid, typing
    _undeliverable: set[str] = field(default_factory=set)
    _user_ids: dict[str, str] = field(default_factory=dict)  # wa_id → BSUID
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def api_base(self) -> str:
        """What LUNOGEN_WHATSAPP_API_BASE is set to."""
        return self.root_url

    def url(self, path: str, *, version: str | None = None) -> str:
        return f"{self.root_url}/{version or self.version}/{path.lstrip('/')}"

    def reset(self) -> None:
        with self._lock:
            self.numbers.clear()
            self.requests.clear()
            self.outbound.clear()
            self.deliveries.clear()
            self._expired.clear()
            self._throttles.clear()
            self._failures.clear()
            self._last_inbound.clear()
            self._inbound_ids.clear()
            self._read.clear()
            self._undeliverable.clear()
            self._user_ids.clear()

    # -- set-up and failures -----------------------------------------------------------------

    def add_number(
        self,
        phone_number_id: str | None = None,
        access_token: str | None = None,
        *,
        display_phone_number: str = "+1 555-0100",
        verified_name: str = "Luno Shop",
        app_secret: str | None = None,
        verify_token: str | None = None,
        waba_id: str | None = None,
    ) -> Number:
        """Register a business phone number (with its WABA, token, app secret, verify token)."""
        number = Number(
            phone_number_id=phone_number_id or _digits(15),
            access_token=access_token
            or "EAAG" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(180)),
            display_phone_number=display_phone_number,
            verified_name=verified_name,
            app_secret=app_secret or secrets.token_hex(16),
            verify_token=verify_token or secrets.token_urlsafe(24),
            waba_id=waba_id or _digits(15),
        )
        with self._lock:
            self.numbers[number.phone_number_id] = number
        return number

    def expire_token(self, token: str) -> None:
        """The token's session expires: error 190 (subcode 463) from now on."""
        with self._lock:
            self._expired.add(token)

    def approve_template(self, number: Number, name: str, language: str = "en_US") -> None:
        with self._lock:
            number.templates.add((name, language))

    def set_last_inbound(
        self, number: Number, wa_id: str, when: dt.datetime | float | None
    ) -> None:
        """When `wa_id` last wrote to `number` (None: never); the window is 24 h from then."""
        key = (number.phone_number_id, wa_id)
        with self._lock:
            if when is None:
                self._last_inbound.pop(key, None)
            else:
                self._last_inbound[key] = (
                    when.timestamp() if isinstance(when, dt.datetime) else float(when)
                )

    def window_open(self, number: Number, wa_id: str, *, at: float | None = None) -> bool:
        last = self._last_inbound.get((number.phone_number_id, wa_id))
        now = time.time() if at is None else at
        return last is not None and now - last < WINDOW_SECONDS

    def throttle(
        self,
        number: Number,
        code: int = 130429,
        *,
        times: int = 1,
        to: str | None = None,
        status: int | None = None,
    ) -> None:
        """The next `times` sends from `number` (to `to` only, if given: a pair rate limit is
        per recipient) answer the throttling error `code` (130429 throughput, 131056 pair
        rate, 80007 WABA rate, 4 app rate), with HTTP 400 as Meta's error table has it unless
        `status` says otherwise (clients must classify by `error.code`)."""
        if code not in ERRORS:
            raise ValueError(f"unknown throttling code {code}")
        wa_id = None if to is None else _wa_id(to)
        with self._lock:
            queue = self._throttles.setdefault(number.phone_number_id, [])
            queue.extend([(code, wa_id, status)] * times)

    def fail_next(self, status: int = 500, *, times: int = 1, code: int | None = None) -> None:
        """The next `times` authenticated requests answer `status` (500: code 1, 503: code 2)."""
        chosen = code if code is not None else (2 if status == 503 else 1)
        title = ERRORS.get(chosen, (status, "An unexpected error occurred", ""))[1]
        with self._lock:
            for _ in range(times):
                self._failures.append(
                    GraphError(
                        status,
                        title,
                        code=chosen,
                        transient=status >= 500 or None,
                    )
                )

    def undeliverable(self, wa_id: str) -> None:
        """Sends to `wa_id` are accepted, then fail with 131026 (not a WhatsApp user)."""
        with self._lock:
            self._undeliverable.add(wa_id)

    # -- assertions ----------------------------------------------------------------------------

    def sent(self, number: Number, to: str | None = None) -> list[Outbound]:
        """Messages the API accepted from `number` (optionally to one wa_id), in order."""
        wanted = None if to is None else _wa_id(to)
        with self._lock:
            return [
                o
                for o in self.outbound
                if o.phone_number_id == number.phone_number_id
                and (wanted is None or o.wa_id == wanted)
            ]

    def sent_texts(self, number: Number, to: str | None = None) -> list[str]:
        return [o.text for o in self.sent(number, to) if o.text is not None]

    def read_receipts(self, number: Number) -> list[str]:
        """The wamids `number` marked as read, in order."""
        with self._lock:
            return [w for n, w, _ in self._read if n == number.phone_number_id]

    def typing_indicators(self, number: Number) -> list[str]:
        """The wamids a typing indicator was shown for, in order."""
        with self._lock:
            return [w for n, w, typing in self._read if n == number.phone_number_id and typing]

    def outcome(self, wamid: str) -> Outbound:
        with self._lock:
            found = next((o for o in self.outbound if o.wamid == wamid), None)
        if found is None:
            raise KeyError(f"the fake never accepted a message {wamid}")
        return found

    # -- webhook payloads, as Meta sends them ---------------------------------------------------

    def user_id(self, wa_id: str) -> str:
        """The user's business-scoped user id (BSUID, `<country>.<digits>`), stable per wa_id."""
        with self._lock:
            if wa_id not in self._user_ids:
                self._user_ids[wa_id] = f"{_country(wa_id)}.{_digits(16)}"
            return self._user_ids[wa_id]

    def envelope(self, number: Number, *values: dict[str, Any]) -> dict[str, Any]:
        """`object: whatsapp_business_account` with one entry (the WABA) and a change per value."""
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": number.waba_id,
                    "changes": [{"value": value, "field": "messages"} for value in values],
                }
            ],
        }

    def value(
        self,
        number: Number,
        *,
        contacts: Sequence[dict[str, Any]] = (),
        messages: Sequence[dict[str, Any]] = (),
        statuses: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        value: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": number.metadata_phone,
                "phone_number_id": number.phone_number_id,
            },
        }
        if contacts:
            value["contacts"] = list(contacts)
        if messages:
            value["messages"] = list(messages)
        if statuses:
            value["statuses"] = list(statuses)
        return value

    def contact(
        self, wa_id: str, *, name: str = "Ada Lovelace", bsuid: bool = True
    ) -> dict[str, Any]:
        contact: dict[str, Any] = {"profile": {"name": name}, "wa_id": wa_id}
        if bsuid:
            contact["user_id"] = self.user_id(wa_id)
            contact["country_code"] = _country(wa_id)
        return contact

    def inbound(
        self,
        number: Number,
        *,
        wa_id: str = "15551234567",
        type: str = "text",
        content: dict[str, Any] | None = None,
        timestamp: float | None = None,
        bsuid: bool = True,
        context: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One entry of `messages[]` from `wa_id`; the fake knows its wamid (for mark-as-read)."""
        wamid = new_wamid(wa_id, inbound=True)
        message: dict[str, Any] = {"from": wa_id}
        if bsuid:
            message["from_user_id"] = self.user_id(wa_id)
        message["id"] = wamid
        message["timestamp"] = str(int(time.time() if timestamp is None else timestamp))
        if context is not None:
            message["context"] = context
        message["type"] = type
        if content is not None:
            message[type] = content
        with self._lock:
            self._inbound_ids[wamid] = (number.phone_number_id, wa_id)
        return message

    def text_message(
        self,
        number: Number,
        *,
        text: str = "Hello",
        wa_id: str = "15551234567",
        name: str = "Ada Lovelace",
        timestamp: float | None = None,
        bsuid: bool = True,
    ) -> dict[str, Any]:
        """An envelope with one text message from `wa_id`."""
        return self.text_messages(
            number, [text], wa_id=wa_id, name=name, timestamp=timestamp, bsuid=bsuid
        )

    def text_messages(
        self,
        number: Number,
        texts: Sequence[str],
        *,
        wa_id: str = "15551234567",
        name: str = "Ada Lovelace",
        timestamp: float | None = None,
        bsuid: bool = True,
    ) -> dict[str, Any]:
        """An envelope with many text messages from `wa_id` batched in one change."""
        messages = [
            self.inbound(
                number,
                wa_id=wa_id,
                content={"body": text},
                timestamp=timestamp,
                bsuid=bsuid,
            )
            for text in texts
        ]
        value = self.value(
            number, contacts=[self.contact(wa_id, name=name, bsuid=bsuid)], messages=messages
        )
        return self.envelope(number, value)

    def image_message(
        self,
        number: Number,
        *,
        wa_id: str = "15551234567",
        caption: str | None = None,
        mime_type: str = "image/jpeg",
        name: str = "Ada Lovelace",
        timestamp: float | None = None,
    ) -> dict[str, Any]:
        """An envelope with an image (a media id to download, never the bytes)."""
        image: dict[str, Any] = {
            "mime_type": mime_type,
            "sha256": base64.b64encode(secrets.token_bytes(32)).decode(),
            "id": _digits(16),
        }
        if caption:
            image["caption"] = caption
        message = self.inbound(
            number, wa_id=wa_id, type="image", content=image, timestamp=timestamp
        )
        value = self.value(number, contacts=[self.contact(wa_id, name=name)], messages=[message])
        return self.envelope(number, value)

    def unsupported_message(self, number: Number, *, wa_id: str = "15551234567") -> dict[str, Any]:
        """An envelope with a message type the Cloud API does not support (`unsupported`)."""
        message = self.inbound(number, wa_id=wa_id, type="unsupported")
        message["errors"] = [
            {
                "code": 131051,
                "title": "Message type unknown",
                "message": "Message type unknown",
                "error_data": {"details": "Message type is currently not supported."},
            }
        ]
        value = self.value(number, contacts=[self.contact(wa_id)], messages=[message])
        return self.envelope(number, value)

    def status(
        self,
        wamid: str,
        status: str,
        *,
        timestamp: float | None = None,
        error: int | None = None,
    ) -> dict[str, Any]:
        """One entry of `statuses[]` for a message the fake accepted."""
        sent = self.outcome(wamid)
        if status == "failed" and error is None:
            error = sent.error or 131026
        entry: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time() if timestamp is None else timestamp)),
            "recipient_id": sent.wa_id,
        }
        if status in ("sent", "delivered"):
            category = "utility" if sent.type == "template" else "service"
            entry["pricing"] = {
                "billable": True,
                "pricing_model": "PMP",
                "category": category,
                "type": "regular",
            }
        if status == "failed":
            _, title, details = ERRORS[error or 131026]
            entry["errors"] = [
                {
                    "code": error,
                    "title": title,
                    "message": title,
                    "error_data": {"details": details},
                    "href": ERROR_CODES_URL,
                }
            ]
        return entry

    def status_envelope(self, number: Number, wamid: str, status: str, **kw: Any) -> dict[str, Any]:
        entry = self.status(wamid, status, **kw)
        contacts = []
        if status != "failed":  # failed statuses carry no contacts (BSUID changes, 2026)
            wa_id = self.outcome(wamid).wa_id
            contacts = [{"wa_id": wa_id, "user_id": self.user_id(wa_id)}]
            entry["recipient_user_id"] = self.user_id(wa_id)
        return self.envelope(number, self.value(number, contacts=contacts, statuses=[entry]))

    @staticmethod
    def combine(*envelopes: dict[str, Any], same_entry: bool = False) -> dict[str, Any]:
        """Many envelopes as one delivery: their entries side by side, or (`same_entry`) all
        their changes in the first envelope's entry."""
        entries = [entry for envelope in envelopes for entry in envelope["entry"]]
        if same_entry:
            changes = [change for entry in entries for change in entry["changes"]]
            entries = [{"id": entries[0]["id"], "changes": changes}]
        return {"object": "whatsapp_business_account", "entry": entries}

    # -- delivering webhooks, like Meta ---------------------------------------------------------

    async def verify_subscription(
        self,
        url: str,
        verify_token: str,
        challenge: str | None = None,
        *,
        mode: str = "subscribe",
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        """Meta's verification request: GET `url?hub.mode=subscribe&hub.challenge=...&
        hub.verify_token=...`; the endpoint must echo the challenge with 200."""
        params = {
            "hub.mode": mode,
            "hub.challenge": challenge if challenge is not None else _digits(10),
            "hub.verify_token": verify_token,
        }
        response = await self._send("GET", url, client=client, params=params)
        with self._lock:
            self.deliveries.append(Delivery(url, b"", {}, response.status_code, method="GET"))
        return response

    async def deliver(
        self,
        number: Number,
        envelope: dict[str, Any],
        url: str,
        *,
        signature: str = "valid",
        client: httpx.AsyncClient | None = None,
    ) -> int:
        """POST `envelope` to `url` as Meta does; the status (0: unreachable).

        `signature`: "valid" (HMAC-SHA256 of the raw body with the number's app secret),
        "invalid" (signed with another secret) or "missing" (no signature header). Inbound
        messages delivered open (or extend) the 24-hour window for their sender.
        """
        body = envelope_bytes(envelope)
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature == "valid":
            secret = number.app_secret
        elif signature == "invalid":
            secret = secrets.token_hex(16)
        elif signature == "missing":
            secret = None
        else:
            raise ValueError(f"signature must be valid, invalid or missing, not {signature!r}")
        if secret is not None:
            headers[SIGNATURE_HEADER] = signature_for(body, secret)
            headers["X-Hub-Signature"] = (
                "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
            )
        self._open_windows(envelope)
        status: int | None
        try:
            response = await self._send("POST", url, client=client, content=body, headers=headers)
            status = response.status_code
        except httpx.HTTPError:
            status = None
        with self._lock:
            self.deliveries.append(Delivery(url, body, headers, status))
        return status if status is not None else 0

    async def deliver_until_accepted(
        self,
        number: Number,
        envelope: dict[str, Any],
        url: str,
        *,
        attempts: int = 5,
        client: httpx.AsyncClient | None = None,
    ) -> list[int]:
        """Deliver again while the endpoint answers anything but 200, as Meta retries (for up
        to 7 days, with back-off; here at most `attempts` times, without waiting)."""
        statuses: list[int] = []
        for _ in range(attempts):
            status = await self.deliver(number, envelope, url, client=client)
            statuses.append(status)
            if status == 200:
                break
        return statuses

    async def deliver_statuses(
        self,
        number: Number,
        url: str,
        wamid: str,
        statuses: Sequence[str] | None = None,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> list[int]:
        """One `statuses` webhook per status, in the order given (Meta does not promise one);
        by default what becomes of the message: `sent, delivered`, or `failed` with its error."""
        if statuses is None:
            statuses = ["failed"] if self.outcome(wamid).error else ["sent", "delivered"]
        results = []
        for status in statuses:
            envelope = self.status_envelope(number, wamid, status)
            results.append(await self.deliver(number, envelope, url, client=client))
        return results

    async def _send(
        self, method: str, url: str, *, client: httpx.AsyncClient | None, **kw: Any
    ) -> httpx.Response:
        if client is not None:
            return await client.request(method, url, **kw)
        async with httpx.AsyncClient(timeout=10) as own:
            return await own.request(method, url, **kw)

    def _open_windows(self, envelope: dict[str, Any]) -> None:
        with self._lock:
            for entry in envelope.get("entry", []):
                for change in entry.get("changes", []):
                    value = change.get("value", {})
                    number_id = value.get("metadata", {}).get("phone_number_id")
                    for message in value.get("messages", []):
                        key = (str(number_id), str(message.get("from")))
                        when = float(message.get("timestamp", time.time()))
                        self._last_inbound[key] = max(self._last_inbound.get(key, 0.0), when)

    # -- HTTP ------------------------------------------------------------------------------------

    def asgi_app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{path:path}", self._endpoint, methods=["GET", "POST", "DELETE"])]
        )

    async def _endpoint(self, request: Request) -> Response:
        raw = await request.body()
        body = _decode_body(raw, request.headers.get("content-type", ""))
        parts = [p for p in request.url.path.split("/") if p]
        version = parts[0] if parts and _VERSION.fullmatch(parts[0]) else ""
        with self._lock:
            try:
                status, answer = self._route(request, parts, body)
            except GraphError as error:
                self._record(request, version, body, error.status)
                return error.response()
            self._record(request, version, body, status)
        return JSONResponse(answer, status_code=status)

    def _record(self, request: Request, version: str, body: Any, status: int) -> None:
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.url.path,
                version=version,
                query=dict(request.query_params),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                status=status,
            )
        )

    def _route(self, request: Request, parts: list[str], body: Any) -> tuple[int, Any]:
        path = "/" + "/".join(parts)
        if len(parts) < 2 or not _VERSION.fullmatch(parts[0]):
            raise GraphError(400, f"Unknown path components: {path}", code=2500)
        token = self._token(request)
        object_id = parts[1]
        number = self.numbers.get(object_id)
        if number is None or number.access_token != token:
            verb = request.method.lower()
            raise _unknown_object(object_id, verb)
        if self._failures:
            raise self._failures.popleft()
        if len(parts) == 2 and request.method == "GET":
            return 200, self._phone_number(number, request.query_params.get("fields"))
        if len(parts) == 3 and parts[2] == "messages" and request.method == "POST":
            return 200, self._messages(number, body)
        raise GraphError(400, f"Unknown path components: /{'/'.join(parts[2:])}", code=2500)

    def _token(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        token = credentials.strip() if scheme.lower() in ("bearer", "oauth") else ""
        token = token or request.query_params.get("access_token", "")
        if not token:
            raise GraphError(400, "An access token is required to request this resource.", code=104)
        if token in self._expired:
            now = dt.datetime.now(dt.UTC)
            then = now - dt.timedelta(hours=1)
            raise GraphError(
                401,
                "Error validating access token: Session has expired on "
                f"{then:%A, %d-%b-%y %H:%M:%S} PST. The current time is "
                f"{now:%A, %d-%b-%y %H:%M:%S} PST.",
                code=190,
                subcode=463,
            )
        if not any(n.access_token == token for n in self.numbers.values()):
            raise GraphError(
                401, "Invalid OAuth access token - Cannot parse access token", code=190
            )
        return token

    def _phone_number(self, number: Number, fields: str | None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "verified_name": number.verified_name,
            "code_verification_status": "VERIFIED",
            "display_phone_number": number.display_phone_number,
            "quality_rating": number.quality_rating,
            "platform_type": "CLOUD_API",
            "throughput": {"level": "STANDARD"},
            "name_status": "APPROVED",
            "messaging_limit_tier": "TIER_1K",
            "is_official_business_account": False,
            "id": number.phone_number_id,
        }
        defaults = (
            "verified_name",
            "code_verification_status",
            "display_phone_number",
            "quality_rating",
            "platform_type",
            "throughput",
            "id",
        )
        wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else defaults
        unknown = [f for f in wanted if f not in full]
        if unknown:
            raise GraphError(
                400,
                f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type "
                "(WhatsAppBusinessPhoneNumber)",
                code=100,
            )
        answer = {f: full[f] for f in wanted}
        answer["id"] = number.phone_number_id
        return answer

    def _messages(self, number: Number, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _param("The parameter messaging_product is required.")
        product = body.get("messaging_product")
        if product is None:
            raise _param("The parameter messaging_product is required.")
        if product != "whatsapp":
            raise _param(f'Param messaging_product must be one of {{WHATSAPP}} - got "{product}".')
        if "status" in body:
            return self._mark_read(number, body)
        to = body.get("to")
        if not to:
            raise _param("The parameter to is required.")
        wa_id = _wa_id(str(to))
        if not re.fullmatch(r"\d{6,15}", wa_id):
            raise _invalid(f"Invalid to parameter: {to}")
        recipient_type = body.get("recipient_type", "individual")
        if recipient_type not in ("individual", "group"):
            raise _param(
                "Param recipient_type must be one of {GROUP, INDIVIDUAL} - got "
                f'"{recipient_type}".'
            )
        kind = body.get("type", "text")
        if kind not in MESSAGE_TYPES:
            choices = ", ".join(t.upper() for t in MESSAGE_TYPES)
            raise _param(f'Param type must be one of {{{choices}}} - got "{kind}".')
        if not isinstance(body.get(kind), dict):
            raise _param(f"The parameter {kind} is required.")
        if kind == "text":
            text = body["text"].get("body")
            if not isinstance(text, str) or not text:
                raise _param("The parameter text['body'] is required.")
            if len(text) > MAX_TEXT:
                raise _param(f"Param text['body'] must be at most {MAX_TEXT} characters long.")
        if kind == "template":
            self._check_template(number, body["template"])
        throttles = self._throttles.get(number.phone_number_id, [])
        for index, (code, only, status) in enumerate(throttles):
            if only is None or only == wa_id:
                del throttles[index]
                refused = coded(code)
                refused.status = status or refused.status
                raise refused
        error = None
        if wa_id in self._undeliverable:
            error = 131026
        elif kind != "template" and not self.window_open(number, wa_id):
            error = 131047  # accepted now, failed in a statuses webhook
        sent = Outbound(
            phone_number_id=number.phone_number_id,
            wamid=new_wamid(wa_id),
            to=str(to),
            wa_id=wa_id,
            payload=body,
            sent_at=time.time(),
            error=error,
        )
        self.outbound.append(sent)
        message: dict[str, Any] = {"id": sent.wamid}
        if kind == "template":
            message["message_status"] = "accepted"
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": str(to), "wa_id": wa_id}],
            "messages": [message],
        }

    def _check_template(self, number: Number, template: dict[str, Any]) -> None:
        name = template.get("name")
        if not isinstance(name, str) or not name:
            raise _param("The parameter template['name'] is required.")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if not isinstance(code, str) or not code:
            raise _param("The parameter template['language']['code'] is required.")
        if (name, code) not in number.templates:
            raise coded(132001, f"template name ({name}) does not exist in {code}")

    def _mark_read(self, number: Number, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("status") != "read":
            raise _param(f'Param status must be one of {{READ}} - got "{body.get("status")}".')
        message_id = body.get("message_id")
        if not message_id:
            raise _param("The parameter message_id is required.")
        origin = self._inbound_ids.get(str(message_id))
        if origin is None or origin[0] != number.phone_number_id:
            raise _invalid(f"Invalid message_id: {message_id}")
        typing = body.get("typing_indicator")
        if typing is not None and (not isinstance(typing, dict) or typing.get("type") != "text"):
            raise _param("Param typing_indicator['type'] must be one of {TEXT}.")
        self._read.append((number.phone_number_id, str(message_id), typing is not None))
        return {"success": True}

    # -- running ---------------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[FakeWhatsApp]:
        fake = cls()
        sock, port = loopback_socket()
        fake.root_url = f"http://127.0.0.1:{port}"
        with serve_in_thread(fake.asgi_app(), sock, name="the fake WhatsApp Cloud API"):
            yield fake


_CALLING_CODES = {
    "1": "US",
    "44": "GB",
    "49": "DE",
    "33": "FR",
    "34": "ES",
    "39": "IT",
    "55": "BR",
    "91": "IN",
    "52": "MX",
    "62": "ID",
    "234": "NG",
    "27": "ZA",
}


def _country(wa_id: str) -> str:
    """The country a number belongs to, as BSUIDs and `country_code` name it (a few codes)."""
    for length in (3, 2, 1):
        if wa_id[:length] in _CALLING_CODES:
            return _CALLING_CODES[wa_id[:length]]
    return "US"


def _wa_id(to: str) -> str:
    """The wa_id Meta answers for a `to`: the number in digits (no `+`, spaces or dashes)."""
    return re.sub(r"[\s()+-]", "", to)


def _decode_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    kind = content_type.split(";")[0].strip().lower()
    text = raw.decode("utf-8", "replace")
    if kind == "application/x-www-form-urlencoded":
        form: dict[str, Any] = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            try:
                form[key] = json.loads(value) if value[:1] in "{[" else value
            except ValueError:
                form[key] = value
        return form
    try:
        return json.loads(text)
    except ValueError:
        return None


def whatsapp_settings(fake: FakeWhatsApp, **overrides: object) -> dict[str, object]:
    """Settings overrides that point LunoGen's WhatsApp client at `fake`."""
    values: dict[str, object] = {"whatsapp_api_base": fake.api_base, "allow_private_urls": True}
    values.update(overrides)
    return values


_SHARED: dict[str, FakeWhatsApp] = {}


def _shared(config: pytest.Config) -> FakeWhatsApp:
    """One server for the whole run, started on first use (so one import gives the fixture)."""
    fake = _SHARED.get("fake")
    if fake is None:
        stack = ExitStack()
        fake = stack.enter_context(FakeWhatsApp.running())
        _SHARED["fake"] = fake

        def stop() -> None:
            _SHARED.pop("fake", None)
            stack.close()

        config.add_cleanup(stop)
    return fake


@pytest.fixture(scope="session")
def whatsapp_server(request: pytest.FixtureRequest) -> FakeWhatsApp:
    return _shared(request.config)


@pytest.fixture
def whatsapp(request: pytest.FixtureRequest) -> Iterator[FakeWhatsApp]:
    """The fake WhatsApp Cloud API, reset for this test (no numbers, requests or failures)."""
    fake = _shared(request.config)
    fake.reset()
    yield fake
    fake.reset()
