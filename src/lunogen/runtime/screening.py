"""Acceptable-use screening of a turn's text, without the runtime knowing who screens: the
moderation room registers a `Screener` here (`moderation.hooks`); with none, nothing is screened.

Where a turn meets it:
- `plan.read`, in its read-only transaction: `screen(session)` gives the rule set of the moment
  (cached in process, so this is usually no query), and the inbound text is checked before any
  model call; a blocked message is kept and ended unanswered (`moderation_blocked`).
- `store.finish`, before its transaction opens: the reply is checked; a blocked reply is stored
  as `WITHHELD` instead, its text kept only as the flag's encrypted evidence.
- the transaction that ends the message (answered, failed or skipped): `recorded(...)` hands
  what was found to the screener, which writes its rows there (flags, classifier checks, the
  threshold's suspension) so that they commit, or not, with the message's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.config import Settings
from lunogen.kit.crypto import KeyRing

Direction = Literal["inbound", "outbound"]

WITHHELD = (
    "This reply was withheld because it does not comply with the acceptable-use policy of "
    "this service."
)


@dataclass(frozen=True)
class Hit:
    """A rule the text met: `rule` its id, `action` flag or block, `label` what matched."""

    rule: str
    action: str
    label: str


@dataclass(frozen=True)
class Screened:
    direction: Direction
    text: str
    hits: tuple[Hit, ...] = ()

    @property
    def blocked(self) -> bool:
        return any(hit.action == "block" for hit in self.hits)


class Screen(Protocol):
    def check(self, direction: Direction, text: str) -> Screened: ...


@dataclass(frozen=True)
class TurnScreening:
    """What a message's end hands the screener: whose it was, the messages (the reply's id when
    one was stored) and the checks' results."""

    agent_id: str
    owner_id: str
    inbound_id: str
    reply_id: str | None
    inbound: Screened | None
    outbound: Screened | None


class Screener(Protocol):
    async def screen(self, session: AsyncSession, settings: Settings) -> Screen: ...

    async def recorded(
        self,
        session: AsyncSession,
        ended: TurnScreening,
        *,
        settings: Settings,
        keyring: KeyRing,
    ) -> None: ...


class _Nothing:
    def check(self, direction: Direction, text: str) -> Screened:
        return Screened(direction, text)


NOTHING: Screen = _Nothing()
_screener: list[Screener] = []


def register(screener: Screener) -> None:
    _screener[:] = [screener]


async def screen(session: AsyncSession, settings: Settings) -> Screen:
    return await _screener[0].screen(session, settings) if _screener else NOTHING


async def recorded(
    session: AsyncSession, ended: TurnScreening, *, settings: Settings, keyring: KeyRing
) -> None:
    if _screener:
        await _screener[0].recorded(session, ended, settings=settings, keyring=keyring)
