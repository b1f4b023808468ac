"""Who may talk to an agent on a channel: `open`, an `allowlist` of contact ids, or `pairing`
(the owner hands out one-use codes that expire after an hour; a contact who sends one is
paired).

A contact who may not talk gets one polite refusal, then silence; the owner is told once.
Everything here runs in the inbound request's transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.channel.contract import ChannelView, Inbound
from lunogen.channel.models import ChannelContact, PairingCode
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow

PAIRING_CODE_LIFETIME = timedelta(hours=1)
# Unambiguous capitals and digits (no 0/O, 1/I/L): read aloud or typed from a screen.
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
_CODE = re.compile(rf"^\s*([{_ALPHABET}]{{{CODE_LENGTH}}})\s*$", re.IGNORECASE)

Verdict = Literal["allowed", "paired", "refuse", "ignore"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    contact: ChannelContact


def policy_of(channel: ChannelView) -> str:
    return config_policy(channel.config)


def config_policy(config: Mapping[str, Any]) -> str:
    """The policy of a channel's config; `pairing` for one saved without a policy (the safe
    side: nobody reaches the agent unpaired; the 0011 migration gave the old rows theirs)."""
    access = config.get("access") or {}
    return str(access.get("policy", "pairing"))


def _allowlist(channel: ChannelView) -> set[str]:
    access = channel.config.get("access") or {}
    return {str(item) for item in access.get("allowlist", [])}


def looks_like_code(text: str) -> bool:
    """Whether `text` is a pairing code and nothing else (a channel may leave it untouched)."""
    return _CODE.match(text) is not None


def new_code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))


def code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


async def unpair(session: AsyncSession, *, channel_id: str, contact: str) -> bool:
    """Forget the contact's pairing (they get the refusal again, once); False if not paired."""
    result = await session.execute(
        update(ChannelContact)
        .where(
            ChannelContact.channel_id == channel_id,
            ChannelContact.contact == contact,
            ChannelContact.paired_at.is_not(None),
        )
        .values(paired_at=None, refused_at=None)
    )
    return bool(getattr(result, "rowcount", 0))


async def make_pairing_code(session: AsyncSession, *, channel_id: str) -> tuple[str, datetime]:
    """A new code for the channel (shown once: only its hash is kept) and when it expires."""
    code = new_code()
    expires = utcnow() + PAIRING_CODE_LIFETIME
    session.add(
        PairingCode(
            id=new_id(), channel_id=channel_id, code_hash=code_hash(code), expires_at=expires
        )
    )
    return code, expires


async def contact_row(
    session: AsyncSession, channel: ChannelView, message: Inbound
) -> ChannelContact:
    """The contact's row, created on first contact; writing again lifts a block."""
    row = (
        await session.execute(
            select(ChannelContact).where(
                ChannelContact.channel_id == channel.id,
                ChannelContact.contact == message.contact,
            )
        )
    ).scalar_one_or_none()
    now = utcnow()
    if row is None:
        row = ChannelContact(
            id=new_id(),
            channel_id=channel.id,
            agent_id=channel.agent_id,
            contact=message.contact,
        )
        try:
            async with session.begin_nested():
                session.add(row)
        except IntegrityError:  # the contact's first two messages arrived together
            return await contact_row(session, channel, message)
    # When they wrote (the provider's time: a delivery redelivered after an outage is old news),
    # which starts a provider's service window.
    row.last_inbound_at = min(message.sent_at, now) if message.sent_at else now
    row.blocked_at = None
    if message.contact_name:
        row.name = message.contact_name[:255]
    return row


async def decide(session: AsyncSession, channel: ChannelView, message: Inbound) -> Decision:
    """Whether `message` may reach the agent under the channel's policy."""
    contact = await contact_row(session, channel, message)
    policy = policy_of(channel)
    listed = message.contact in _allowlist(channel)
    if policy == "open" or listed:
        return Decision("allowed", contact)
    # A pairing counts under the pairing policy only: switching to an allowlist shuts out
    # whoever is not listed, paired or not.
    if policy == "pairing" and contact.paired_at is not None:
        return Decision("allowed", contact)
    if policy == "pairing" and await _redeem(session, channel, message):
        contact.paired_at = utcnow()
        return Decision("paired", contact)
    if contact.refused_at is None:
        contact.refused_at = utcnow()
        return Decision("refuse", contact)
    return Decision("ignore", contact)


async def _redeem(session: AsyncSession, channel: ChannelView, message: Inbound) -> bool:
    """Use the code the message holds, if it is one of this channel's, unused and unexpired."""
    found = _CODE.match(message.text)
    if found is None:
        return False
    now = utcnow()
    used = await session.execute(
        update(PairingCode)
        .where(
            PairingCode.channel_id == channel.id,
            PairingCode.code_hash == code_hash(found.group(1)),
            PairingCode.used_at.is_(None),
            PairingCode.expires_at > now,
        )
        .values(used_at=now, used_by=message.contact)
    )
    return bool(getattr(used, "rowcount", 0))


def refusal_text(channel: ChannelView) -> str:
    if policy_of(channel) == "pairing":
        return (
            f"Hello! {channel.agent_name} only talks with people its owner has paired. If you "
            "have a pairing code, send it here."
        )
    return f"Hello! Sorry, {channel.agent_name} is not available to you here."


def paired_text(channel: ChannelView) -> str:
    return f"You're paired. {channel.agent_name} is listening: say hello!"
