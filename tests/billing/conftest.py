"""Ledger tests work on the migrated test database directly, one transaction per operation;
billing API tests use the app with the fake OpenRouter and the fake Stripe."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from lunogen.db import create_engine, create_sessionmaker
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    openrouter,
    openrouter_server,
)
from tests.fakes.stripe import (  # noqa: F401 (fixtures)
    stripe_fake,
    stripe_server,
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sm(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)
