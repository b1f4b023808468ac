"""Visitor tokens: stateless, signed, short-lived proof that a web chat session was opened.

Format: ``wc1.<key id>.<base64url payload>.<base64url HMAC-SHA256>``. The payload binds the
channel id, the visitor id and the expiry (unix seconds). The HMAC key is derived from a key of
the app's key ring (never the AES key itself): the primary key signs, every key of the ring
verifies, so a key rotation does not cut visitors off. No table: a token cannot be revoked
before it expires, which is why it lives 15 minutes and the page asks for a new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass

from lunogen.kit.crypto import Key, KeyRing

VERSION = "wc1"
TOKEN_SECONDS = 15 * 60
VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_PURPOSE = b"lunogen webchat visitor token v1"


class VisitorTokenError(Exception):
    """The token is malformed, forged, expired, or for another channel (the message says which)."""


@dataclass(frozen=True)
class VisitorToken:
    channel_id: str
    visitor_id: str
    expires_at: int


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signing_key(key: Key) -> bytes:
    return hmac.new(key.material, _PURPOSE, hashlib.sha256).digest()


def _signature(key: Key, signed: str) -> bytes:
    return hmac.new(_signing_key(key), signed.encode(), hashlib.sha256).digest()


def _key(keyring: KeyRing, key_id: str) -> Key | None:
    for attempt in range(2):
        for key in keyring.keys:
            if key.id == key_id:
                return key
        if attempt == 0 and not keyring.reload():  # a key added by `lunogen secrets rotate`
            return None
    return None


def issue(
    keyring: KeyRing,
    *,
    channel_id: str,
    visitor_id: str,
    seconds: int = TOKEN_SECONDS,
    now: float | None = None,
) -> tuple[str, int]:
    """A token for `visitor_id` on `channel_id`, and its expiry (unix seconds)."""
    if not VISITOR_ID.match(visitor_id):
        raise ValueError("visitor_id must be 16 to 64 characters of A-Z, a-z, 0-9, _ and -")
    expires_at = int(now if now is not None else time.time()) + seconds
    payload = json.dumps({"c": channel_id, "v": visitor_id, "e": expires_at}, separators=(",", ":"))
    key = keyring.keys[0]
    signed = f"{VERSION}.{key.id}.{_b64e(payload.encode())}"
    return f"{signed}.{_b64e(_signature(key, signed))}", expires_at


def verify(
    keyring: KeyRing, token: str, *, channel_id: str, now: float | None = None
) -> VisitorToken:
    """The token's claims, if it is ours, unexpired, and for `channel_id`; else VisitorTokenError.

    The signature is checked (in constant time) before anything in the payload is believed.
    """
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION or len(token) > 1000:
        raise VisitorTokenError("not a web chat visitor token")
    version, key_id, payload_text, signature_text = parts
    key = _key(keyring, key_id)
    if key is None:
        raise VisitorTokenError("the token was signed with a key this server no longer has")
    try:
        signature = _b64d(signature_text)
        payload_raw = _b64d(payload_text)
    except ValueError as exc:
        raise VisitorTokenError("not a web chat visitor token") from exc
    expected = _signature(key, f"{version}.{key_id}.{payload_text}")
    if not hmac.compare_digest(signature, expected):
        raise VisitorTokenError("the token's signature is not valid")
    try:
        claims = json.loads(payload_raw)
        claimed = VisitorToken(
            channel_id=str(claims["c"]), visitor_id=str(claims["v"]), expires_at=int(claims["e"])
        )
    except (ValueError, KeyError, TypeError) as exc:  # signed by us, so never in practice
        raise VisitorTokenError("the token's payload is not valid") from exc
    if claimed.channel_id != channel_id:
        raise VisitorTokenError("the token belongs to another chat")
    if claimed.expires_at <= (now if now is not None else time.time()):
        raise VisitorTokenError("the token has expired")
    return claimed
