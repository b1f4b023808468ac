from __future__ import annotations

import pytest

from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    return openrouter_settings(openrouter)


from tests.agent.conftest import api_for_live  # noqa: E402, F401 (fixture)
from tests.runtime.sandbox_support import bwrap_available  # noqa: E402, F401 (fixture)
