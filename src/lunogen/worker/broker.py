"""The Taskiq broker. Jobs carry only ids; the database row is the source of truth.

Issue 2 runs the in-memory broker inside the server process. The Redis Streams broker and the
`lunogen worker` process arrive with the agent runtime; job code does not change for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskiq import InMemoryBroker

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from lunogen.config import Settings
    from lunogen.kit.crypto import KeyRing
    from lunogen.llm.provider import ModelClient

broker = InMemoryBroker(await_inplace=False)


@dataclass
class JobRuntime:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    worker_id: str = "embedded"
    model_client: ModelClient | None = None


_runtime: JobRuntime | None = None


def set_runtime(runtime: JobRuntime | None) -> None:
    global _runtime
    _runtime = runtime


def runtime() -> JobRuntime:
    if _runtime is None:
        raise RuntimeError("job runtime is not configured; start the app or worker first")
    return _runtime
