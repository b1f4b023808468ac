"""[retention-deletion] When you delete an agent or your account, it disappears at once and its
data is purged within 30 days; until then you can cancel an account deletion by signing in.

The grace period cannot be set beyond 30 days; a deleted agent's purge date is within it. Day
29 and day 30, the cancellation and the purge of every table: `tests/privacy/test_retention.py`
and `tests/privacy/test_deletion.py`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from lunogen.agent.models import Agent
from lunogen.config import Settings
from lunogen.kit.time import utcnow
from tests.account.support import rows
from tests.agent.support import create_agent, new_dev
from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "retention-deletion"
SENTENCE = sentence(TAG)


def test_the_grace_period_cannot_exceed_30_days() -> None:
    assert Settings.model_fields["purge_after_days"].default == 30
    with pytest.raises(ValidationError):
        Settings(purge_after_days=31)


async def test_a_deleted_agent_is_hidden_at_once_and_due_within_30_days(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.delete(f"/api/v1/agents/{agent['id']}")).status_code in (200, 204)
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}")).status_code == 404
    (row,) = await rows(api, select(Agent).where(Agent.id == agent["id"]))
    assert row.purge_after is not None
    assert row.purge_after <= utcnow() + timedelta(days=30)
