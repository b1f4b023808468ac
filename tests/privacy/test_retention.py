"""The retention purge with a controllable clock: day 29 everything is there and restorable,
day 30 nothing in any table refers to the person (or the agent) and their files are gone."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from lunogen.account.models import User
from lunogen.agent.models import Agent
from lunogen.billing.models import CreditAccount, CreditEntry
from lunogen.billing.verify import verify_all
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo
from lunogen.privacy import deletion
from lunogen.privacy.retention import (
    TOMBSTONE_PREFIX,
    purge_due,
    references,
    unclassified_columns,
)
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.agent.support import create_agent, new_dev
from tests.billing.stripe_support import billing_settings
from tests.conftest import PG_URL
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.fakes.stripe import FakeStripe
from tests.helpers import PASSWORD, Api
from tests.privacy.support import count, holder, rows_mentioning


async def _settle() -> None:
    for _ in range(3):
        await enqueue.drain()
        await wait_idle()


def _workspaces(api: Api) -> Path:
    path: Path = api.app.state.settings.workspaces_dir
    return path


async def _delete_account(
    api: Api, owner_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await owner_client.post(
        "/api/v1/account/delete", json={"password": PASSWORD}, headers=headers
    )
    assert response.status_code == 200, response.text
    await _settle()


async def _deleted_at(api: Api, user_id: str) -> datetime:
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, user_id)
        assert user is not None and user.deleted_at is not None
        return user.deleted_at


def test_every_reference_column_is_known() -> None:
    assert unclassified_columns() == []
    user_tables = {table.name for table, _column in references("user")}
    assert {"api_keys", "auth_sessions", "agents", "usage_records", "stripe_events"} <= user_tables
    agent_tables = {table.name for table, _column in references("agent")}
    assert {"agent_channels", "threads", "messages", "agent_log_events", "memory_notes"} <= (
        agent_tables
    )


async def test_day_29_everything_is_there_and_the_account_restorable(
    api: Api, openrouter: FakeOpenRouter, stripe_fake: FakeStripe
) -> None:
    owner = await holder(api, openrouter, stripe_fake, workspaces=_workspaces(api))
    await _delete_account(api, owner.session, owner.dev.person.headers)
    deleted_at = await _deleted_at(api, owner.id)
    settings = api.app.state.settings
    sm = api.app.state.sessionmaker

    report = await purge_due(sm, settings, now=deleted_at + timedelta(days=29, hours=23))
    assert (report.agents, report.accounts, report.skipped) == (0, 0, None)
    assert await rows_mentioning(api, [owner.id]) != []
    assert all((_workspaces(api) / agent_id).is_dir() for agent_id in owner.agents)
    async with sm() as session:
        await deletion.restore_with_password(
            session,
            email=owner.email,
            password=PASSWORD,
            days=settings.purge_after_days,
            client=ClientInfo(ip="127.0.0.1", user_agent="pytest"),
            now=deleted_at + timedelta(days=29, hours=23),
        )
        await session.commit()
    report = await purge_due(sm, settings, now=deleted_at + timedelta(days=31))
    assert (report.agents, report.accounts) == (0, 0)  # restored: nothing is due any more
    async with sm() as session:
        assert (await session.get(User, owner.id)) is not None


async def test_day_30_the_person_is_gone_from_every_table_and_the_disk(
    api: Api, openrouter: FakeOpenRouter, stripe_fake: FakeStripe
) -> None:
    bystander = await holder(api, openrouter, workspaces=_workspaces(api))
    owner = await holder(api, openrouter, stripe_fake, workspaces=_workspaces(api))
    await _delete_account(api, owner.session, owner.dev.person.headers)
    deleted_at = await _deleted_at(api, owner.id)
    sm = api.app.state.sessionmaker
    async with sm() as session:
        entries_before = len(
            (
                await session.execute(select(CreditEntry).where(CreditEntry.account_id == owner.id))
            ).all()
        )
        account = await session.get(CreditAccount, owner.id)
        assert account is not None
        balance_before = account.balance
    audit_before = await count(api, "audit_events")
    bystander_rows = await rows_mentioning(api, [bystander.id, *bystander.agents])

    report = await purge_due(sm, api.app.state.settings, now=deleted_at + timedelta(days=30))
    assert (report.agents, report.accounts) == (0, 1)

    needles = [owner.id, owner.email, *owner.agents, *owner.channel_ids]
    assert await rows_mentioning(api, needles) == []
    assert not any((_workspaces(api) / agent_id).exists() for agent_id in owner.agents)
    # What stays: the ledger (same amounts, under one tombstone id) and the audit log.
    assert await count(api, "audit_events") == audit_before
    async with sm() as session:
        tombstones = list(
            (
                await session.execute(
                    select(CreditAccount).where(CreditAccount.user_id.like(f"{TOMBSTONE_PREFIX}%"))
                )
            ).scalars()
        )
        assert [t.balance for t in tombstones] == [balance_before]
        kept = (
            await session.execute(
                select(CreditEntry).where(CreditEntry.account_id == tombstones[0].user_id)
            )
        ).all()
        assert len(kept) == entries_before
        assert await verify_all(session) == []
    # Nobody else lost anything.
    assert await rows_mentioning(api, [bystander.id, *bystander.agents]) == bystander_rows
    assert all((_workspaces(api) / agent_id).is_dir() for agent_id in bystander.agents)
    # The same address can make a new account now.
    again = await api.sign_up(owner.email)
    assert again.id != owner.id

    rerun = await purge_due(sm, api.app.state.settings, now=deleted_at + timedelta(days=31))
    assert (rerun.agents, rerun.accounts) == (0, 0)


async def test_a_deleted_agent_is_purged_alone_when_due(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    owner = await holder(api, openrouter, workspaces=_workspaces(api))
    other = await holder(api, openrouter, workspaces=_workspaces(api))
    gone, kept = owner.agents
    deleted = await owner.dev.http.delete(f"/api/v1/agents/{gone}")
    assert deleted.status_code == 204, deleted.text
    await _settle()
    async with api.app.state.sessionmaker() as session:
        agent = await session.get(Agent, gone)
        assert agent is not None and agent.purge_after is not None
        purge_after = agent.purge_after
    (_workspaces(api) / gone).mkdir(parents=True, exist_ok=True)  # as if its code wrote again
    others_before = await rows_mentioning(api, [other.id, *other.agents, kept])

    early = await purge_due(
        api.app.state.sessionmaker, api.app.state.settings, now=purge_after - timedelta(seconds=1)
    )
    assert early.agents == 0
    assert await rows_mentioning(api, [gone]) != []
    report = await purge_due(api.app.state.sessionmaker, api.app.state.settings, now=purge_after)
    assert (report.agents, report.accounts) == (1, 0)
    assert await rows_mentioning(api, [gone, *owner.channel_ids]) == []
    assert not (_workspaces(api) / gone).exists()
    assert (_workspaces(api) / kept).is_dir()
    assert await rows_mentioning(api, [other.id, *other.agents, kept]) == others_before
    listed = await owner.dev.http.get("/api/v1/agents")
    assert [a["id"] for a in listed.json()["data"]] == [kept]


class TestAShorterGracePeriod:
    @pytest.fixture
    def settings_overrides(
        self, openrouter: FakeOpenRouter, stripe_fake: FakeStripe
    ) -> dict[str, object]:
        return {
            **openrouter_settings(openrouter),
            **billing_settings(stripe_fake),
            "purge_after_days": 7,
        }

    async def test_agents_and_accounts_follow_the_setting(
        self, api: Api, openrouter: FakeOpenRouter
    ) -> None:
        dev = await new_dev(api)
        first = await create_agent(dev)
        assert (await dev.http.delete(f"/api/v1/agents/{first['id']}")).status_code == 204
        second = await create_agent(dev, name="Second")
        page = await dev.person.client.get(f"/agents/{second['id']}/delete")
        assert "7 days" in page.text
        posted = await dev.person.client.post(
            f"/agents/{second['id']}/delete", data={"csrf_token": dev.person.csrf}
        )
        assert posted.status_code == 303, posted.text
        async with api.app.state.sessionmaker() as session:
            for agent_id in (first["id"], second["id"]):
                row = await session.get(Agent, agent_id)
                assert row is not None and row.purge_after and row.deleted_at
                assert row.purge_after - row.deleted_at == timedelta(days=7)
        response = await dev.person.client.post(
            "/api/v1/account/delete", json={"password": PASSWORD}, headers=dev.person.headers
        )
        deleted_at = await _deleted_at(api, dev.id)
        assert response.json()["purge_after"].startswith(
            (deleted_at + timedelta(days=7)).date().isoformat()
        )
        sm, settings = api.app.state.sessionmaker, api.app.state.settings
        early = await purge_due(sm, settings, now=deleted_at + timedelta(days=6, hours=23))
        assert early.accounts == 0
        report = await purge_due(sm, settings, now=deleted_at + timedelta(days=7))
        assert report.accounts == 1
        assert await rows_mentioning(api, [dev.id, first["id"], second["id"]]) == []


@pytest.mark.skipif(not PG_URL, reason="row locks with SKIP LOCKED: the PostgreSQL pass")
async def test_two_purges_at_once_share_the_work(api: Api, openrouter: FakeOpenRouter) -> None:
    dev = await new_dev(api)
    ids = []
    for number in range(6):
        agent = await create_agent(dev, name=f"Bot {number}")
        assert (await dev.http.delete(f"/api/v1/agents/{agent['id']}")).status_code == 204
        ids.append(agent["id"])
    now = utcnow() + timedelta(days=31)
    sm, settings = api.app.state.sessionmaker, api.app.state.settings
    first, second = await asyncio.gather(
        purge_due(sm, settings, now=now), purge_due(sm, settings, now=now)
    )
    assert first.agents + second.agents == len(ids)
    assert await rows_mentioning(api, ids) == []


async def test_the_append_only_tables_accept_a_tombstone_and_nothing_else(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    person = await api.sign_up()
    sm = api.app.state.sessionmaker
    tomb = f"{TOMBSTONE_PREFIX}{'0' * 31}"
    refused = [
        "UPDATE audit_events SET action = 'forged' WHERE actor_user_id = :id",
        "UPDATE audit_events SET actor_user_id = 'someone-else' WHERE actor_user_id = :id",
        "UPDATE audit_events SET details = '{}', ip = NULL WHERE actor_user_id = :id",
        "DELETE FROM audit_events WHERE actor_user_id = :id",
        "UPDATE credit_entries SET amount = amount + 1 WHERE account_id = :id",
        "UPDATE credit_entries SET description = 'forged' WHERE account_id = :id",
        "DELETE FROM credit_entries WHERE account_id = :id",
    ]
    for statement in refused:
        async with sm() as session:
            with pytest.raises(DBAPIError):
                await session.execute(text(statement), {"id": person.id})
            await session.rollback()
    async with sm() as session:
        await session.execute(
            text(
                "UPDATE audit_events SET actor_user_id = :tomb, subject_user_id = :tomb, "
                "target_id = CASE WHEN target_id = :id THEN :tomb ELSE target_id END, "
                "ip = NULL, user_agent = NULL WHERE actor_user_id = :id"
            ),
            {"id": person.id, "tomb": tomb},
        )
        await session.execute(
            text(
                "INSERT INTO credit_accounts (user_id, balance, held, low_credit_threshold, "
                "low_alert_sent, created_at, updated_at) SELECT :tomb, balance, held, "
                "low_credit_threshold, low_alert_sent, created_at, updated_at FROM "
                "credit_accounts WHERE user_id = :id"
            ),
            {"id": person.id, "tomb": tomb},
        )
        await session.execute(
            text("UPDATE credit_entries SET account_id = :tomb WHERE account_id = :id"),
            {"id": person.id, "tomb": tomb},
        )
        await session.commit()
    async with sm() as session:  # once a tombstone, always that tombstone
        with pytest.raises(DBAPIError):
            await session.execute(
                text("UPDATE credit_entries SET account_id = :other WHERE account_id = :tomb"),
                {"tomb": tomb, "other": f"{TOMBSTONE_PREFIX}{'1' * 31}"},
            )
        await session.rollback()
