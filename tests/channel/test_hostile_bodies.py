"""Bodies built to break a JSON parser or a column (deep nesting, numbers thousands of digits
long, out-of-range ids and times) get a 4xx or are skipped, never a 500, on every channel."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from lunogen.channel.contract import ChannelView, InboundRejected, InboundRequest
from lunogen.channel.telegram.updates import parse_update
from lunogen.channel.whatsapp import inbound as whatsapp_inbound
from tests.channel.support import new_hook
from tests.channel.test_webchat import OWN, new_chat
from tests.helpers import Api

DEEP = b"[" * 3000 + b"]" * 3000
HUGE = b'{"id": "x", "from": "a", "text": "hi", "n": ' + b"9" * 5000 + b"}"


def _view(kind: str, **config: Any) -> ChannelView:
    return ChannelView(
        id="ch-1",
        agent_id="a-1",
        agent_name="Luno",
        type=kind,
        config=config,
        secrets={},
        registration={"username": "lunobot", "id": 42},
    )


def _request(body: bytes) -> InboundRequest:
    return InboundRequest(method="POST", headers={}, query={}, body=body)


@pytest.mark.parametrize("body", [DEEP, HUGE, b"\xff\xfe", b"[]", b'"text"'])
async def test_the_webhook_channel_refuses_them_after_the_signature(api: Api, body: bytes) -> None:
    hook = await new_hook(api, mode="sync")
    response = await hook.post(body)
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    "body",
    [DEEP, b'{"visitor_id": ' + b"1" * 5000 + b"}", b'{"visitor_id": [' * 2000],
)
async def test_the_web_chat_refuses_them(api: Api, body: bytes) -> None:
    chat = await new_chat(api)
    session = await chat.http.post(
        f"/chat/{chat.id}/session",
        content=body,
        headers={"Origin": OWN, "Content-Type": "application/json"},
    )
    assert 400 <= session.status_code < 500, session.text
    token = await chat.token("v" * 20)
    message = await chat.http.post(
        f"/chat/{chat.id}/messages",
        content=body,
        headers={
            "Origin": OWN,
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        },
    )
    assert 400 <= message.status_code < 500, message.text


@pytest.mark.parametrize(
    "update",
    [
        DEEP,
        b'{"update_id": ' + b"1" * 5000 + b"}",
        json.dumps({"update_id": 2**70, "message": {}}).encode(),
        json.dumps(
            {
                "update_id": 1,
                "message": {"message_id": 2**64, "date": 1, "chat": {"id": 1, "type": "private"}},
            }
        ).encode(),
        json.dumps(
            {
                "update_id": 1,
                "message": {
                    "message_id": 1,
                    "date": 10**20,
                    "chat": {"id": -(2**64), "type": "private"},
                    "text": "hi",
                },
            }
        ).encode(),
    ],
)
def test_telegram_updates_that_are_not_updates_are_refused(update: bytes) -> None:
    with pytest.raises(InboundRejected) as refused:
        parse_update(update, _view("telegram", groups="mention"))
    assert refused.value.status == 400


def test_telegram_times_out_of_range_are_dropped_not_fatal() -> None:
    update = {
        "update_id": 1,
        "message": {
            "message_id": 1,
            "date": 10**20,
            "chat": {"id": 7, "type": "private"},
            "from": {"id": 7, "first_name": "Ada"},
            "text": "hi",
        },
    }
    [message] = parse_update(json.dumps(update).encode(), _view("telegram")).messages
    assert message.sent_at is None and message.text == "hi"


def _envelope(timestamp: str) -> bytes:
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"phone_number_id": "106540352242922"},
                                "contacts": [{"wa_id": "15551234567", "profile": {"name": "A"}}],
                                "messages": [
                                    {
                                        "from": "15551234567",
                                        "id": "wamid.1",
                                        "timestamp": timestamp,
                                        "type": "text",
                                        "text": {"body": "hi"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()


@pytest.mark.parametrize(
    "timestamp",
    ["999999999999", "²³", "1" * 400, "-5", str(int(time.time()))],
    ids=["far-future", "superscript-digits", "400-digits", "negative", "now"],
)
def test_whatsapp_timestamps_of_any_shape_never_fail_the_envelope(timestamp: str) -> None:
    view = _view("whatsapp", phone_number_id="106540352242922")
    parsed = whatsapp_inbound.parse(_request(_envelope(timestamp)), view)
    [message] = parsed.messages
    assert message.text == "hi"
    if timestamp.isascii() and len(timestamp) <= 11 and timestamp.isdigit():
        assert message.sent_at is not None


@pytest.mark.parametrize("body", [DEEP, b'{"object": ' + b"7" * 5000 + b"}"])
def test_whatsapp_bodies_that_are_not_json_are_refused(body: bytes) -> None:
    with pytest.raises(InboundRejected) as refused:
        whatsapp_inbound.parse(_request(body), _view("whatsapp", phone_number_id="1"))
    assert refused.value.status == 400
