from __future__ import annotations

import pytest

from tests.billing.stripe_support import billing_settings
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)
from tests.fakes.stripe import FakeStripe, stripe_fake, stripe_server  # noqa: F401 (fixtures)


@pytest.fixture
def settings_overrides(
    openrouter: FakeOpenRouter,  # noqa: F811
    stripe_fake: FakeStripe,  # noqa: F811
) -> dict[str, object]:
    return {**openrouter_settings(openrouter), **billing_settings(stripe_fake)}
