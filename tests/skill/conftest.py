from __future__ import annotations

import pytest

from tests.agent.support import Dev, new_dev
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)
from tests.helpers import Api


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    """Agents here can deploy: the model provider is the fake OpenRouter on 127.0.0.1."""
    return openrouter_settings(openrouter)


@pytest.fixture
async def dev_api(api: Api) -> tuple[Api, Dev]:
    return api, await new_dev(api)
