"""The fake WhatsApp Cloud API, over real HTTP: Graph shapes and errors, the 24-hour window,
injected limits, and webhooks signed and delivered like Meta's."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes import whatsapp as fake_whatsapp
from tests.fakes.server import loopback_socket, serve_in_thread
from tests.fakes.whatsapp import FakeWhatsApp, Number, envelope_bytes, whatsapp_settings

whatsapp = fake_whatsapp.whatsapp

USER = "15551234567"


@dataclass
class Receiver:
    """A webhook endpoint like the one LunoGen must serve: verification GET, signed POSTs."""

    port: int = 0
    app_secret: str = ""
    verify_token: str = ""
    received: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    script: deque[int] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/whatsapp/chan_1"

    def envelopes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body, status in self.received if status == 200]

    async def verify(self, request: Request) -> Response:
        query = request.query_params
        if query.get("hub.mode") == "subscribe" and hmac.compare_digest(
            query.get("hub.verify_token", ""), self.verify_token
        ):
            return PlainTextResponse(query.get("hub.challenge", ""))
        return Response(status_code=403)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        given = request.headers.get("x-hub-signature-256", "")
        expected = "sha256=" + hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()
        with self.lock:
            if not hmac.compare_digest(given, expected):
                status = 401
            else:
                status = self.script.popleft() if self.script else 200
            self.received.append(({k.lower(): v for k, v in request.headers.items()}, body, status))
        return Response(status_code=status)


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    sock, port = loopback_socket()
    receiver = Receiver(port=port)
    app = Starlette(
        routes=[
            Route("/hooks/whatsapp/chan_1", receiver.verify, methods=["GET"]),
            Route("/hooks/whatsapp/chan_1", receiver.hook, methods=["POST"]),
        ]
    )
    with serve_in_thread(app, sock, name="whatsapp webhook receiver"):
        yield receiver


@pytest.fixture
def number(whatsapp: FakeWhatsApp) -> Number:
    return whatsapp.add_number(display_phone_number="+1 555-0100", verified_name="Luno Shop")


@pytest.fixture
def receiver(receiver_server: Receiver, number: Number) -> Iterator[Receiver]:
    receiver_server.app_secret = number.app_secret
    receiver_server.verify_token = number.verify_token
    receiver_server.received.clear()
    receiver_server.script.clear()
    yield receiver_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def send(
    http: httpx.AsyncClient,
    fake: FakeWhatsApp,
    number: Number,
    body: dict[str, Any],
    *,
    token: str | None = None,
) -> httpx.Response:
    return await http.post(
        fake.url(f"{number.phone_number_id}/messages"),
        json=body,
        headers={"Authorization": f"Bearer {token or number.access_token}"},
    )


def text(to: str, body: str) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body, "preview_url": False},
    }


# -- the phone number and tokens ----------------------------------------------------------------


async def test_phone_number_is_read_with_a_bearer_token_or_the_query_parameter(
    whatsapp: FakeWhatsApp, number: Number, http: httpx.AsyncClient
) -> None:
    url = whatsapp.url(number.phone_number_id)
    by_header = await http.get(url, headers={"Authorization": f"Bearer {number.access_token}"})
    by_query = await http.get(url, params={"access_token": number.access_token})
    assert by_header.status_code == by_query.status_code == 200
    assert by_header.json() == by_query.json()
    assert by_header.json() == {
        "verified_name": "Luno Shop",
        "code_verification_status": "VERIFIED",
        "display_phone_number": "+1 555-0100",
        "quality_rating": "GREEN",
        "platform_type": "CLOUD_API",
        "throughput": {"level": "STANDARD"},
        "id": number.phone_number_id,
    }
    some = await http.get(
        url, params={"access_token": number.access_token, "fields": "verified_name,name_status"}
    )
    assert some.json() == {
        "verified_name": "Luno Shop",
        "name_status": "APPROVED",
        "id": number.phone_number_id,
    }
    wrong = await http.get(url, params={"access_token": number.access_token, "fields": "nope"})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == 100
    assert [r.version for r in whatsapp.requests] == ["v23.0"] * 4


async def test_token_and_object_errors_are_graphs(
    whatsapp: FakeWhatsApp, number: Number, http: httpx.AsyncClient
) -> None:
    url = whatsapp.url(number.phone_number_id)
    other = whatsapp.add_number()

    missing = await http.get(url)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == 104

    garbage = await http.get(url, headers={"Authorization": "Bearer EAAGnotatoken"})
    assert garbage.status_code == 401
    assert garbage.json()["error"]["code"] == 190
    assert garbage.headers["www-authenticate"].startswith('OAuth "Facebook Platform"')

    unknown = await http.get(
        whatsapp.url("100000000000001"), params={"access_token": number.access_token}
    )
    foreign = await http.get(url, params={"access_token": other.access_token})
    for response, object_id in ((unknown, "100000000000001"), (foreign, number.phone_number_id)):
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["error_subcode"], error["type"]) == (
            100,
            33,
            "GraphMethodException",
        )
        assert error["message"].startswith(
            f"Unsupported get request. Object with ID '{object_id}' does not exist"
        )
        assert error["fbtrace_id"]

    whatsapp.expire_token(number.access_token)
    expired = await http.get(url, params={"access_token": number.access_token})
    assert expired.status_code == 401
    error = expired.json()["error"]
    assert error["message"].startswith("Error validating access token: Session has expired on ")
    assert (error["type"], error["code"], error["error_subcode"]) == ("OAuthException", 190, 463)
    sent = await send(http, whatsapp, number, text(USER, "hi"))
    assert sent.json()["error"]["code"] == 190


# -- sending --------------------------------------------------------------------------------------


async def test_text_inside_the_window_is_accepted_and_delivered(
    whatsapp: FakeWhatsApp, number: Number, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    inbound = whatsapp.text_message(number, text="Hi shop", wa_id=USER)
    assert await whatsapp.deliver(number, inbound, receiver.url) == 200
    assert whatsapp.window_open(number, USER)

    response = await send(http, whatsapp, number, text(f"+{USER}", "Hello Ada"))
    assert response.status_code == 200
    body = response.json()
    wamid = body["messages"][0]["id"]
    assert body == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": f"+{USER}", "wa_id": USER}],
        "messages": [{"id": wamid}],
    }
    assert wamid.startswith("wamid.")
    assert whatsapp.sent_texts(number, to=USER) == ["Hello Ada"]
    assert whatsapp.outcome(wamid).error is None

    assert await whatsapp.deliver_statuses(number, receiver.url, wamid) == [200, 200]
    values = [e["entry"][0]["changes"][0]["value"] for e in receiver.envelopes()]
    statuses = [v["statuses"][0] for v in values if "statuses" in v]
    assert [s["status"] for s in statuses] == ["sent", "delivered"]
    sent = statuses[0]
    assert (sent["id"], sent["recipient_id"]) == (wamid, USER)
    assert sent["pricing"] == {
        "billable": True,
        "pricing_model": "PMP",
        "category": "service",
        "type": "regular",
    }


async def test_outside_the_window_free_text_is_accepted_then_fails_with_131047(
    whatsapp: FakeWhatsApp, number: Number, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    whatsapp.set_last_inbound(number, USER, dt.datetime.now(dt.UTC) - dt.timedelta(hours=25))
    assert not whatsapp.window_open(number, USER)
    response = await send(http, whatsapp, number, text(USER, "Still there?"))
    assert response.status_code == 200  # the API accepts it ...
    wamid = response.json()["messages"][0]["id"]
    assert whatsapp.outcome(wamid).error == 131047

    assert await whatsapp.deliver_statuses(number, receiver.url, wamid) == [200]  # ... then no
    value = receiver.envelopes()[-1]["entry"][0]["changes"][0]["value"]
    assert "contacts" not in value
    failed = value["statuses"][0]
    assert (failed["id"], failed["status"], failed["recipient_id"]) == (wamid, "failed", USER)
    assert failed["errors"] == [
        {
            "code": 131047,
            "title": "Re-engagement message",
            "message": "Re-engagement message",
            "error_data": {
                "details": "Message failed to send because more than 24 hours have passed "
                "since the customer last replied to this number."
            },
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }
    ]

    whatsapp.set_last_inbound(number, USER, time.time() - 23 * 3600)
    reopened = await send(http, whatsapp, number, text(USER, "Sorry for the wait"))
    assert whatsapp.outcome(reopened.json()["messages"][0]["id"]).error is None


async def test_templates_must_be_approved_and_ignore_the_window(
    whatsapp: FakeWhatsApp, number: Number, http: httpx.AsyncClient
) -> None:
    body = {
        "messaging_product": "whatsapp",
        "to": USER,
        "type": "template",
        "template": {"name": "reply_ready", "language": {"code": "en_US"}},
    }
    refused = await send(http, whatsapp, number, body)
    assert refused.status_code == 404
    error = refused.json()["error"]
    assert error["code"] == 132001
    assert error["message"] == "(#132001) Template name does not exist in the translation"
    assert error["error_data"]["details"] == "template name (reply_ready) does not exist in en_US"

    whatsapp.approve_template(number, "reply_ready", "en_US")
    accepted = await send(http, whatsapp, number, body)
    assert accepted.status_code == 200
    message = accepted.json()["messages"][0]
    assert message["message_status"] == "accepted"
    assert whatsapp.outcome(message["id"]).error is None  # no window for templates
    assert whatsapp.sent(number)[-1].type == "template"


async def test_invalid_messages_get_graph_parameter_errors(
    whatsapp: FakeWhatsApp, number: Number, http: httpx.AsyncClient
) -> None:
    too_long = await send(http, whatsapp, number, text(USER, "x" * 4097))
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == 100
    assert "at most 4096 characters" in too_long.json()["error"]["message"]
    assert (await send(http, whatsapp, number, text(USER, "x" * 4096))).status_code == 200

    no_product = text(USER, "hi")
    del no_product["messaging_product"]
    missing = await send(http, whatsapp, number, no_product)
    assert missing.json()["error"]["message"] == (
        "(#100) The parameter messaging_product is required."
    )
    bad_type = {**text(USER, "hi"), "type": "hologram"}
    assert (await send(http, whatsapp, number, bad_type)).json()["error"]["code"] == 100
    no_to = {k: v for k, v in text(USER, "hi").items() if k != "to"}
    assert (await send(http, whatsapp, number, no_to)).json()["error"]["message"] == (
        "(#100) The parameter to is required."
    )
    assert len(whatsapp.sent(number)) == 1  # only the 4096-character one went out


async def test_mark_as_read_with_a_typing_indicator(
    whatsapp: FakeWhatsApp, number: Number, http: httpx.AsyncClient
) -> None:
    envelope = whatsapp.text_message(number, text="hi", wa_id=USER)
    wamid = envelope["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}

    assert (await send(http, whatsapp, number, read)).json() == {"success": True}
    typing = {**read, "typing_indicator": {"type": "text"}}
    assert (await send(http, whatsapp, number, typing)).json() == {"success": True}
    assert whatsapp.read_receipts(number) == [wamid, wamid]
    assert whatsapp.typing_indicators(number) == [wamid]

    unknown = await send(http, whatsapp, number, {**read, "message_id": "wamid.nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == 100
    assert whatsapp.sent(number) == []  # receipts are not messages


async def test_throttling_and_scripted_failures(
    whatsapp: FakeWhatsApp, number: Number, http: httpx.AsyncClient
) -> None:
    whatsapp.set_last_inbound(number, USER, time.time())
    whatsapp.throttle(number, code=130429)
    whatsapp.throttle(number, code=131056)

    first = await send(http, whatsapp, number, text(USER, "a"))
    assert first.status_code == 400
    assert first.json()["error"]["code"] == 130429
    assert first.json()["error"]["message"] == "(#130429) Rate limit hit"
    assert first.json()["error"]["error_data"] == {
        "messaging_product": "whatsapp",
        "details": "Cloud API message throughput has been reached.",
    }
    second = await send(http, whatsapp, number, text(USER, "a"))
    assert second.json()["error"]["code"] == 131056
    assert "pair rate limit hit" in second.json()["error"]["message"]
    assert (await send(http, whatsapp, number, text(USER, "a"))).status_code == 200

    other = "4915123456789"
    whatsapp.set_last_inbound(number, other, time.time())
    whatsapp.throttle(number, code=131056, to=USER)  # a pair limit: only this recipient
    assert (await send(http, whatsapp, number, text(other, "c"))).status_code == 200
    paired = await send(http, whatsapp, number, text(USER, "c"))
    assert (paired.status_code, paired.json()["error"]["code"]) == (400, 131056)
    whatsapp.throttle(number, code=130429, status=429)
    assert (await send(http, whatsapp, number, text(USER, "c"))).status_code == 429

    whatsapp.fail_next(status=500)
    failed = await send(http, whatsapp, number, text(USER, "b"))
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == 1
    assert failed.json()["error"]["is_transient"] is True
    assert (await send(http, whatsapp, number, text(USER, "b"))).status_code == 200
    assert whatsapp.sent_texts(number) == ["a", "c", "b"]
    assert [r.status for r in whatsapp.requests] == [400, 400, 200, 200, 400, 429, 500, 200]


# -- webhooks -------------------------------------------------------------------------------------


async def test_verification_echoes_the_challenge_only_for_the_right_token(
    whatsapp: FakeWhatsApp, number: Number, receiver: Receiver
) -> None:
    good = await whatsapp.verify_subscription(receiver.url, number.verify_token, "1158201444")
    assert (good.status_code, good.text) == (200, "1158201444")
    bad = await whatsapp.verify_subscription(receiver.url, "not-the-token")
    assert bad.status_code == 403


async def test_deliveries_are_signed_over_the_raw_body(
    whatsapp: FakeWhatsApp, number: Number, receiver: Receiver
) -> None:
    envelope = whatsapp.text_message(number, text="Grüße 👋", wa_id=USER, name="Ada")
    assert await whatsapp.deliver(number, envelope, receiver.url) == 200
    assert await whatsapp.deliver(number, envelope, receiver.url, signature="invalid") == 401
    assert await whatsapp.deliver(number, envelope, receiver.url, signature="missing") == 401

    headers, body, _ = receiver.received[0]
    assert body == envelope_bytes(envelope)
    assert b"\\u00fc" in body  # non-ASCII escaped, as Meta sends it
    expected = hmac.new(number.app_secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-hub-signature-256"] == f"sha256={expected}"
    assert headers["x-hub-signature"].startswith("sha1=")
    assert "x-hub-signature-256" not in receiver.received[2][0]

    value = json.loads(body)["entry"][0]["changes"][0]
    assert value["field"] == "messages"
    payload = value["value"]
    assert payload["metadata"] == {
        "display_phone_number": "15550100",
        "phone_number_id": number.phone_number_id,
    }
    assert payload["contacts"][0]["profile"] == {"name": "Ada"}
    assert payload["contacts"][0]["wa_id"] == USER
    assert payload["contacts"][0]["user_id"].startswith("US.")
    assert payload["contacts"][0]["country_code"] == "US"
    message = payload["messages"][0]
    assert (message["from"], message["type"], message["text"]) == (
        USER,
        "text",
        {"body": "Grüße 👋"},
    )
    assert message["from_user_id"] == payload["contacts"][0]["user_id"]  # the 2026 BSUID
    assert message["id"].startswith("wamid.")
    assert message["timestamp"].isdigit()


async def test_batches_out_of_order_statuses_and_retries(
    whatsapp: FakeWhatsApp, number: Number, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    batch = whatsapp.combine(
        whatsapp.text_messages(number, ["one", "two"], wa_id=USER),
        whatsapp.image_message(number, wa_id="15557654321", caption="receipt"),
        whatsapp.unsupported_message(number, wa_id="15557654321"),
        same_entry=True,
    )
    assert len(batch["entry"]) == 1 and len(batch["entry"][0]["changes"]) == 3
    receiver.script.extend([500, 503])
    assert await whatsapp.deliver_until_accepted(number, batch, receiver.url) == [500, 503, 200]
    changes = receiver.envelopes()[-1]["entry"][0]["changes"]
    assert [m["text"]["body"] for m in changes[0]["value"]["messages"]] == ["one", "two"]
    image = changes[1]["value"]["messages"][0]
    assert image["type"] == "image"
    assert set(image["image"]) == {"mime_type", "sha256", "id", "caption"}
    assert changes[2]["value"]["messages"][0]["errors"][0]["code"] == 131051
    assert whatsapp.window_open(number, "15557654321")

    sent = await send(http, whatsapp, number, text(USER, "Got both"))
    wamid = sent.json()["messages"][0]["id"]
    order = ["read", "sent", "delivered"]
    assert await whatsapp.deliver_statuses(number, receiver.url, wamid, order) == [200] * 3
    values = [e["entry"][0]["changes"][0]["value"] for e in receiver.envelopes()[-3:]]
    assert [v["statuses"][0]["status"] for v in values] == order
    assert "pricing" not in values[0]["statuses"][0]  # read carries no pricing
    assert values[1]["contacts"][0]["wa_id"] == USER
    assert values[1]["statuses"][0]["recipient_user_id"] == values[1]["contacts"][0]["user_id"]


async def test_deliver_through_a_given_client_reaches_an_in_process_app(
    whatsapp: FakeWhatsApp, number: Number
) -> None:
    seen: list[bytes] = []

    async def hook(request: Request) -> Response:
        seen.append(await request.body())
        return Response(status_code=200)

    app = Starlette(routes=[Route("/hooks/whatsapp/{id}", hook, methods=["POST"])])
    envelope = whatsapp.text_message(number)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lunogen.test") as client:
        url = "http://lunogen.test/hooks/whatsapp/c1"
        assert await whatsapp.deliver(number, envelope, url, client=client) == 200
    assert seen == [envelope_bytes(envelope)]


def test_settings_point_lunogen_at_the_fake(whatsapp: FakeWhatsApp) -> None:
    assert whatsapp_settings(whatsapp) == {
        "whatsapp_api_base": whatsapp.root_url,
        "allow_private_urls": True,
    }
