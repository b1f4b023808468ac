"""What every part of a turn is handed, and how a turn can end."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.config import Settings
from lunogen.kit.crypto import KeyRing
from lunogen.llm.provider import ModelClient
from lunogen.runtime.events import TurnEvents

MAX_TOOL_STEPS = 8
TURN_TOKEN_CAP = 200_000
TOOL_RESULT_CHARS = 8_000
MAX_ATTEMPTS = 3
CRASH_AFTER_FAILURES = 3


@dataclass
class TurnDeps:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    model_client: ModelClient | None
    events: TurnEvents | None = None

    @property
    def allow_private_urls(self) -> bool:
        return self.settings.allow_private_urls


class TurnOutcome:
    ANSWERED = "answered"
    RETRY_LATER = "retry_later"
    FAILED = "failed"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"  # our lease ran out and another worker took the thread
    AWAITING_APPROVAL = "awaiting_approval"  # stopped until the owner decides on a tool call
