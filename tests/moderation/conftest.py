from __future__ import annotations

import pytest

from tests.fakes.moderation import (  # noqa: F401 (fixtures)
    FakeModeration,
    moderation_fake,
    moderation_server,
    moderation_settings,
)
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)


@pytest.fixture
def settings_overrides(
    openrouter: FakeOpenRouter,  # noqa: F811
    moderation_fake: FakeModeration,  # noqa: F811
) -> dict[str, object]:
    """Agents answer through the fake OpenRouter; the classifier is the fake moderation
    endpoint; rules are re-read at once (no cache between a test's requests and its turns)."""
    return {
        **openrouter_settings(openrouter),
        **moderation_settings(moderation_fake),
        "moderation_suspend_after": 3,
    }
