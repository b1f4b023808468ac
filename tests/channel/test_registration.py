"""Provider registration through the channel contract, with a scripted channel type standing in
for Telegram: deploy registers with no transaction open and fails with the provider's reason;
stop, delete and removal unregister in retried jobs; a stop then a start leaves it registered;
a deploy cut off mid-registration goes to `error`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from lunogen.agent import lifecycle
from lunogen.agent.models import Agent, AgentChannel
from lunogen.channel import contract, delivery
from lunogen.channel import registration as registration_jobs
from lunogen.channel.contract import (
    ChannelType,
    ChannelView,
    ProviderContext,
    Registration,
    RegistrationFailed,
)
from lunogen.channel.models import ChannelUnregistration
from lunogen.channel.service import read_secrets
from lunogen.kit.time import utcnow
from lunogen.notification.models import Notification
from lunogen.worker import enqueue
from lunogen.worker.broker import runtime, wait_idle
from tests.agent.support import Dev, create_agent, new_dev, telegram
from tests.channel.support import until
from tests.helpers import Api


class Scripted(ChannelType):
    """A provider that remembers who is registered and fails when told to."""

    name = "telegram"
    registers = True
    pushes_replies = True

    def __init__(self) -> None:
        self.registered: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.unregistered_with: list[str | None] = []
        self.refuse: dict[str, str] = {}  # channel id → reason
        self.unregister_failures = 0
        self.unregister_delay = 0.0
        self.during_register: Callable[[], Awaitable[None]] | None = None

    async def register(self, ctx: ProviderContext, channel: ChannelView) -> Registration:
        self.calls.append(("register", channel.id))
        if self.during_register is not None:
            await self.during_register()
        if channel.id in self.refuse:
            raise RegistrationFailed(self.refuse[channel.id])
        secret = f"hook-secret-{channel.id[:8]}"
        self.registered[channel.id] = secret
        return Registration(secrets={"webhook_secret": secret}, details={"username": "lunobot"})

    async def unregister(self, ctx: ProviderContext, channel: ChannelView) -> None:
        self.calls.append(("unregister", channel.id))
        self.unregistered_with.append(channel.secrets.get("webhook_secret"))
        await asyncio.sleep(self.unregister_delay)
        if self.unregister_failures:
            self.unregister_failures -= 1
            raise RegistrationFailed("the provider is down")
        self.registered.pop(channel.id, None)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Scripted:
    scripted = Scripted()
    monkeypatch.setitem(contract._types, "telegram", scripted)
    return scripted


async def settle() -> None:
    for _ in range(3):
        await enqueue.drain()
        await wait_idle()


async def agent_with(dev: Dev, count: int = 1) -> dict[str, Any]:
    channels = [telegram(access={"policy": "open"}) for _ in range(count)]
    return await create_agent(dev, channels=channels)


async def channel_rows(api: Api, agent_id: str) -> list[AgentChannel]:
    async with api.app.state.sessionmaker() as session:
        query = (
            select(AgentChannel)
            .where(AgentChannel.agent_id == agent_id)
            .order_by(AgentChannel.position)
        )
        return list((await session.execute(query)).scalars())


async def tasks(api: Api) -> list[ChannelUnregistration]:
    async with api.app.state.sessionmaker() as session:
        query = select(ChannelUnregistration).order_by(ChannelUnregistration.created_at)
        return list((await session.execute(query)).scalars())


async def test_deploy_registers_with_no_transaction_open(api: Api, provider: Scripted) -> None:
    dev = await new_dev(api)
    agent = await agent_with(dev)

    async def write_meanwhile() -> None:
        # A deploy holding its transaction (the SQLite write lock, the agent's row lock on
        # PostgreSQL) would make this wait until the timeout.
        async with asyncio.timeout(5), api.app.state.sessionmaker() as session:
            await session.execute(
                update(Agent).where(Agent.id == agent["id"]).values(description="edited")
            )
            await session.commit()

    provider.during_register = write_meanwhile
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["status"] == "running"
    [shown] = deployed.json()["channels"]
    assert shown["registered_at"] is not None
    assert shown["registration"] == {"username": "lunobot"}
    assert "hook-secret" not in deployed.text
    [row] = await channel_rows(api, agent["id"])
    secrets = read_secrets(row, api.app.state.keyring)
    assert secrets["webhook_secret"] == provider.registered[row.id]
    assert "bot_token" in secrets  # the owner's secret is kept beside it
    logs = (await dev.http.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]
    assert any(line["event"] == "channel.registered" for line in logs)


async def test_a_refusal_fails_the_deploy_and_undoes_the_others(
    api: Api, provider: Scripted
) -> None:
    dev = await new_dev(api)
    agent = await agent_with(dev, count=2)
    first, second = agent["channels"]
    provider.refuse[second["id"]] = "Unauthorized"
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 502, deployed.text
    assert deployed.json()["error"] == "Deploy failed: telegram: Unauthorized"
    status = (await dev.http.get(f"/api/v1/agents/{agent['id']}/status")).json()
    assert status["status"] == "error" and "Unauthorized" in status["last_error"]
    await settle()
    assert provider.calls == [
        ("register", first["id"]),
        ("register", second["id"]),
        ("unregister", first["id"]),
    ]
    assert provider.unregistered_with == [f"hook-secret-{first['id'][:8]}"]
    assert provider.registered == {}
    assert [task.status for task in await tasks(api)] == ["done"]
    assert all(row.registered_at is None for row in await channel_rows(api, agent["id"]))


async def test_stop_unregisters_and_start_registers_again(api: Api, provider: Scripted) -> None:
    dev = await new_dev(api)
    agent = await agent_with(dev)
    [channel] = agent["channels"]
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")).status_code == 200
    await settle()
    assert provider.registered == {}
    assert provider.unregistered_with == [f"hook-secret-{channel['id'][:8]}"]
    [row] = await channel_rows(api, agent["id"])
    assert row.registered_at is None
    assert [task.status for task in await tasks(api)] == ["done"]
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/start")).status_code == 200
    assert channel["id"] in provider.registered


async def test_a_stop_then_a_start_at_once_leaves_it_registered(
    api: Api, provider: Scripted
) -> None:
    dev = await new_dev(api)
    agent = await agent_with(dev)
    [channel] = agent["channels"]
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    provider.unregister_delay = 0.5  # the stop's unregistration is still in flight at the start
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")).status_code == 200
    await until(lambda: _in_flight(api), "the unregistration to start")
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/start")).status_code == 200
    await settle()
    assert [call for call, _ in provider.calls] == ["register", "unregister", "register"]
    assert channel["id"] in provider.registered


async def _in_flight(api: Api) -> bool:
    return any(task.status == "sending" for task in await tasks(api))


async def test_a_stop_then_a_start_before_the_job_runs_cancels_it(
    api: Api, provider: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = await new_dev(api)
    agent = await agent_with(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200

    async def not_yet(*_args: object) -> None:  # the job's worker is busy elsewhere
        return None

    with monkeypatch.context() as patch:
        patch.setattr(registration_jobs, "attempt_unregistration", not_yet)
        assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")).status_code == 200
        await settle()
    assert [task.status for task in await tasks(api)] == ["queued"]
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/start")).status_code == 200
    assert await registration_jobs.requeue_due(api.app.state.sessionmaker) == 0
    await settle()
    assert [task.status for task in await tasks(api)] == ["superseded"]
    assert [call for call, _ in provider.calls] == ["register", "register"]
    assert agent["channels"][0]["id"] in provider.registered


async def test_an_unregistration_that_keeps_failing_tells_the_owner(
    api: Api, provider: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registration_jobs, "MAX_ATTEMPTS", 3)
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 0.01)
    provider.unregister_failures = 10
    dev = await new_dev(api)
    agent = await agent_with(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")).status_code == 200

    async def given_up() -> bool:
        return [task.status for task in await tasks(api)] == ["failed"]

    await until(given_up, "the unregistration to give up")
    [task] = await tasks(api)
    assert task.attempts == 3 and task.last_error == "the provider is down"
    async with api.app.state.sessionmaker() as session:
        notes = list(
            (
                await session.execute(
                    select(Notification).where(Notification.kind == "channel.unregister_failed")
                )
            ).scalars()
        )
    assert len(notes) == 1 and "the provider is down" in notes[0].body
    logs = (await dev.http.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]
    assert any(line["event"] == "channel.unregister_failed" for line in logs)


async def test_removing_or_deleting_unregisters(api: Api, provider: Scripted) -> None:
    dev = await new_dev(api)
    agent = await agent_with(dev, count=2)
    first = agent["channels"][0]
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    kept = [{"type": "telegram", "id": first["id"], "access": {"policy": "open"}}]
    patched = await dev.http.patch(f"/api/v1/agents/{agent['id']}", json={"channels": kept})
    assert patched.status_code == 200, patched.text
    await settle()
    assert set(provider.registered) == {first["id"]}
    assert (await dev.http.delete(f"/api/v1/agents/{agent['id']}")).status_code == 204
    await settle()
    assert provider.registered == {}
    assert [task.status for task in await tasks(api)] == ["done", "done"]


async def test_a_deploy_cut_off_while_registering_goes_to_error(
    api: Api, provider: Scripted
) -> None:
    dev = await new_dev(api)
    agent = await agent_with(dev)
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(Agent)
            .where(Agent.id == agent["id"])
            .values(status="deploying", status_changed_at=utcnow() - timedelta(minutes=21))
        )
        await session.commit()
    assert await lifecycle.fail_interrupted_deploys(runtime()) == 1
    status = (await dev.http.get(f"/api/v1/agents/{agent['id']}/status")).json()
    assert status["status"] == "error" and "interrupted" in status["last_error"]
    assert await lifecycle.fail_interrupted_deploys(runtime()) == 0
    redeployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert redeployed.status_code == 200, redeployed.text


async def test_a_channel_type_without_an_implementation_is_refused_at_deploy(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, channels=[{"type": "webchat", "allowed_origins": []}])
    monkeypatch.delitem(contract._types, "webchat")  # a server built without the web chat
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 502, deployed.text
    assert deployed.json()["error"] == (
        "Deploy failed: no implementation of the channel type(s) webchat here"
    )
    status = (await dev.http.get(f"/api/v1/agents/{agent['id']}/status")).json()
    assert status["status"] == "error"


async def test_a_stop_during_a_deploy_waits_for_it(api: Api, provider: Scripted) -> None:
    dev = await new_dev(api)
    agent = await agent_with(dev)
    answers: list[int] = []

    async def stop_meanwhile() -> None:
        stopped = await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")
        answers.append(stopped.status_code)
        assert stopped.json()["error"] == "Agent is deploying"

    provider.during_register = stop_meanwhile
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200 and deployed.json()["status"] == "running"
    assert answers == [409]
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")).status_code == 200


async def test_a_deploy_overtaken_by_a_later_one_leaves_the_provider_to_it(
    api: Api, provider: Scripted
) -> None:
    dev = await new_dev(api)
    agent = await agent_with(dev)

    async def declared_interrupted_then_deployed_again() -> None:
        async with api.app.state.sessionmaker() as session:
            await session.execute(
                update(Agent)
                .where(Agent.id == agent["id"])
                .values(status="running", status_changed_at=utcnow() + timedelta(seconds=1))
            )
            await session.commit()

    provider.during_register = declared_interrupted_then_deployed_again
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 409, deployed.text
    assert deployed.json()["error"] == "Agent is running"
    await settle()
    assert [call for call, _ in provider.calls] == ["register"]  # nothing undone
    assert await tasks(api) == []
