from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.channel.receiver import Receiver
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    # Callbacks go to a receiver on 127.0.0.1; the hand-run sweeper only (no background one).
    return openrouter_settings(openrouter, allow_private_urls=True, sweep_interval_seconds=0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as fake:
        yield fake
