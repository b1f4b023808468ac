"""Ledger tests work on the migrated test database directly, one transaction per operation;
billing API tests use the app with the fake OpenRouter and the fake Stripe."""

from __future__ import annotations

from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    openrouter,
    openrouter_server,
)
from tests.fakes.stripe import (  # noqa: F401 (fixtures)
    stripe_fake,
    stripe_server,
)
