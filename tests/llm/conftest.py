"""Model client tests run against the fake OpenRouter on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from openai._base_client import BaseClient

from lunogen.config import Settings
from lunogen.llm.provider import ModelClient
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    return openrouter_settings(openrouter)


@pytest.fixture
def retry_delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the SDK chose before each retry, as computed; it then sleeps 1/1000 of each,
    so that a test of backoff does not take seconds."""
    delays: list[float] = []
    computed = BaseClient._calculate_retry_timeout

    def spy(self: Any, *args: Any, **kwargs: Any) -> float:
        delay: float = computed(self, *args, **kwargs)
        delays.append(delay)
        return delay / 1000

    monkeypatch.setattr(BaseClient, "_calculate_retry_timeout", spy)
    return delays


ClientFactory = Callable[..., Awaitable[ModelClient]]


@pytest.fixture
async def make_client(settings: Settings) -> AsyncIterator[ClientFactory]:
    """`await make_client(**setting_overrides)`: a ModelClient, closed after the test."""
    clients: list[ModelClient] = []

    async def make(**overrides: Any) -> ModelClient:
        client = ModelClient.from_settings(settings.model_copy(update=overrides))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def model_client(make_client: ClientFactory) -> ModelClient:
    return await make_client()
