"""[retention-logs] Runtime logs are deleted after the retention period the operator sets (30
days unless changed).

`LUNOGEN_LOG_RETENTION_DAYS` (default 30) sets the period; the `log_purge` periodic step of
every job process (`runlog/logs.py`) deletes older lines. Here: lines just past the period are
gone from the table and the log API after the step, younger ones stay, and the default is 30.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from lunogen.config import Settings
from lunogen.kit.time import utcnow
from lunogen.runlog import logs
from lunogen.runlog.models import AgentLogEvent
from lunogen.worker import maintenance
from tests.account.support import rows
from tests.agent.support import create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "retention-logs"
SENTENCE = sentence(TAG)


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, log_retention_days=7)


def test_the_default_period_is_30_days() -> None:
    assert Settings.model_fields["log_retention_days"].default == 30
    assert "30 days unless changed" in SENTENCE


async def test_lines_older_than_the_setting_are_purged_by_the_step(api: Api) -> None:
    assert "log_purge" in maintenance._periodic
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    lines = await rows(api, select(AgentLogEvent).order_by(AgentLogEvent.id))
    assert len(lines) >= 2
    old, young = lines[0].id, lines[-1].id
    async with api.app.state.sessionmaker() as session:
        now = utcnow()
        await session.execute(
            update(AgentLogEvent)
            .where(AgentLogEvent.id == old)
            .values(created_at=now - timedelta(days=7, minutes=1))
        )
        await session.execute(
            update(AgentLogEvent)
            .where(AgentLogEvent.id == young)
            .values(created_at=now - timedelta(days=6, hours=23))
        )
        await session.commit()
    removed = await logs.purge_old_logs(api.app.state.sessionmaker, api.app.state.settings)
    assert removed == 1
    left = {line.id for line in await rows(api, select(AgentLogEvent))}
    assert old not in left and young in left
    shown = (await dev.http.get(f"/api/v1/agents/{agent['id']}/logs")).json()
    assert old not in [line["id"] for line in shown["data"]]
