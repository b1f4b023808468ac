from __future__ import annotations

import pytest
from openai._base_client import BaseClient

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
def fast_sdk_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model client still retries (`llm_max_retries`), without the SDK's seconds of
    back-off between tries, where retries are not what the test is about."""
    monkeypatch.setattr(BaseClient, "_calculate_retry_timeout", lambda *_a, **_k: 0.001)


from tests.agent.conftest import api_for_live  # noqa: E402, F401 (fixture)
from tests.runtime.sandbox_support import bwrap_available  # noqa: E402, F401 (fixture)
