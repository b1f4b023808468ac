"""Standard Webhooks signing and verification, against values computed here by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from lunogen.channel import delivery, webhook

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
NOW = 1_700_000_000
BODY = b'{"id":"m1","from":"ada","text":"hi"}'


def by_hand(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(signature: str, *, timestamp: int = NOW, msg_id: str = MSG_ID) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_sign_matches_hmac_sha256_over_id_timestamp_body() -> None:
    expected = by_hand(KEY, MSG_ID, NOW, BODY)
    assert webhook.sign(SECRET, MSG_ID, NOW, BODY) == expected
    assert webhook.sign(SECRET, MSG_ID, NOW, BODY.decode()) == expected
    assert webhook.sign(SECRET, MSG_ID, NOW + 1, BODY) != expected


def test_the_standard_webhooks_reference_vector() -> None:
    # The example of the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        webhook.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_verify_accepts_a_valid_signature_and_returns_the_id() -> None:
    signature = by_hand(KEY, MSG_ID, NOW, BODY)
    assert webhook.verify(headers(signature), BODY, [SECRET], now=NOW) == MSG_ID


def test_any_v1_entry_of_the_list_may_match() -> None:
    good = by_hand(KEY, MSG_ID, NOW, BODY)
    other = by_hand(b"x" * 32, MSG_ID, NOW, BODY)
    listed = f"v2,abc {other} {good}"
    assert webhook.verify(headers(listed), BODY, [SECRET], now=NOW) == MSG_ID


def test_any_of_several_secrets_may_match() -> None:
    other_secret = "whsec_" + base64.b64encode(b"y" * 32).decode()
    signature = by_hand(KEY, MSG_ID, NOW, BODY)
    assert webhook.verify(headers(signature), BODY, [other_secret, SECRET], now=NOW) == MSG_ID


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("tampered body", "does not match"),
        ("wrong secret", "does not match"),
        ("other id", "does not match"),
        ("no v1 entry", "no 'v1,' signature"),
        ("stale", "more than 5 minutes"),
        ("future", "more than 5 minutes"),
        ("bad timestamp", "unix time"),
        ("missing signature", "missing header(s): webhook-signature"),
        ("missing all", "webhook-id, webhook-timestamp, webhook-signature"),
    ],
)
def test_verify_refuses(case: str, problem: str) -> None:
    good = by_hand(KEY, MSG_ID, NOW, BODY)
    body = BODY
    given = headers(good)
    if case == "tampered body":
        body = BODY.replace(b"hi", b"ho")
    elif case == "wrong secret":
        given = headers(by_hand(b"z" * 32, MSG_ID, NOW, BODY))
    elif case == "other id":
        given = headers(good, msg_id="msg_other")
    elif case == "no v1 entry":
        given = headers("v2," + good.removeprefix("v1,"))
    elif case == "stale":
        given = headers(by_hand(KEY, MSG_ID, NOW - 301, BODY), timestamp=NOW - 301)
    elif case == "future":
        given = headers(by_hand(KEY, MSG_ID, NOW + 301, BODY), timestamp=NOW + 301)
    elif case == "bad timestamp":
        given = {**given, "webhook-timestamp": "yesterday"}
    elif case == "missing signature":
        del given["webhook-signature"]
    elif case == "missing all":
        given = {}
    with pytest.raises(webhook.SignatureError) as raised:
        webhook.verify(given, body, [SECRET], now=NOW)
    assert problem in str(raised.value)


def test_within_five_minutes_is_accepted() -> None:
    stamp = NOW - 299
    signature = by_hand(KEY, MSG_ID, stamp, BODY)
    assert webhook.verify(headers(signature, timestamp=stamp), BODY, [SECRET], now=NOW) == MSG_ID


def test_retry_after_and_backoff() -> None:
    assert delivery.retry_after_seconds("7") == 7.0
    assert delivery.retry_after_seconds(None) is None
    assert delivery.retry_after_seconds("soon") is None
    assert delivery.retry_after_seconds("999999") == delivery.BACKOFF_MAX_SECONDS
    for attempt in (1, 2, 5):
        ceiling = delivery.BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)
        assert ceiling / 2 <= delivery.backoff_seconds(attempt) <= ceiling
