"""Tool calls that wait for the owner's approval: the turn stops, the owner decides, the turn
goes on exactly once; denied and expired calls never run, and no retry runs a call twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from lunogen.billing.verify import verify_all
from lunogen.llm.models import UsageRecord
from lunogen.notification.models import Notification
from lunogen.runtime import approvals
from lunogen.runtime.approval_models import ToolApproval
from lunogen.runtime.models import Message, RecordedCall
from lunogen.runtime.tasks import sweep_once
from lunogen.runtime.turn import loop
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.agent.support import Dev, create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api, sse_events


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    """The tests sweep by hand: no background sweeper racing them."""
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def _agent(api: Api, *, gate: bool = True, tools: list[str] | None = None) -> tuple[Dev, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=tools or ["current_time"])
    if gate:
        policy = await dev.http.put(
            f"/api/v1/agents/{agent['id']}/approval-policy",
            json={"tools": {"current_time": True}, "expiry_minutes": 30},
        )
        assert policy.status_code == 200, policy.text
        assert policy.json()["gated"] == ["current_time"]
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    return dev, str(agent["id"])


async def _say(dev: Dev, agent_id: str, text: str = "What time is it?") -> dict[str, Any]:
    response = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": text, "contact": "ada"}
    )
    assert response.status_code in (200, 202), response.text
    body: dict[str, Any] = response.json()
    return body


async def _pending(dev: Dev, agent_id: str) -> list[dict[str, Any]]:
    listed = await dev.http.get(f"/api/v1/agents/{agent_id}/approvals?status=pending")
    assert listed.status_code == 200, listed.text
    data: list[dict[str, Any]] = listed.json()["data"]
    return data


async def _decide(dev: Dev, agent_id: str, approval_id: str, decision: str) -> Any:
    return await dev.http.post(
        f"/api/v1/agents/{agent_id}/approvals/{approval_id}", json={"decision": decision}
    )


async def _settle() -> None:
    await enqueue.drain()
    await wait_idle()


def _tool_outputs(openrouter: FakeOpenRouter) -> list[str]:
    return [m["content"] for m in openrouter.last_chat.messages if m["role"] == "tool"]


async def _reply_of(api: Api, message_id: str) -> str | None:
    async with api.app.state.sessionmaker() as session:
        found = await session.execute(
            select(Message.content).where(Message.reply_to_id == message_id)
        )
        content = found.scalar_one_or_none()
    return None if content is None else api.app.state.keyring.decrypt(content)


async def _count(api: Api, query: Any) -> int:
    async with api.app.state.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())


async def test_a_gated_call_stops_the_turn_until_approved_then_runs_once(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _agent(api)
    openrouter.call_tool("current_time", {"timezone": "Europe/Paris"})
    openrouter.echo()
    body = await _say(dev, agent_id)

    assert body["status"] == "awaiting_approval" and body["reply"] is None
    assert len(openrouter.chat_requests) == 1  # nothing ran after the model asked
    [request] = await _pending(dev, agent_id)
    assert request["tool"] == "current_time"
    assert request["arguments"] == '{"timezone": "Europe/Paris"}'
    assert request["message_id"] == body["message"]["id"]
    async with api.app.state.sessionmaker() as session:
        stored = await session.get(ToolApproval, request["id"])
        assert stored is not None and "Europe/Paris" not in stored.arguments  # ciphertext
        [note] = (
            await session.execute(
                select(Notification).where(Notification.kind == "approval.requested")
            )
        ).scalars()
        assert "current_time" in note.title and note.agent_id == agent_id

    decided = await _decide(dev, agent_id, request["id"], "approve")
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved"
    await _settle()

    # The recorded first call is reused: one more model call, with the tool's real output.
    assert len(openrouter.chat_requests) == 2
    [output] = _tool_outputs(openrouter)
    assert not output.startswith("Error") and "Europe/Paris" in output
    assert await _reply_of(api, body["message"]["id"]) == output
    listed = await dev.http.get(f"/api/v1/agents/{agent_id}/approvals")
    [after] = listed.json()["data"]
    assert after["status"] == "executed" and after["executed_at"] is not None
    assert await _count(api, select(func.count()).select_from(UsageRecord)) == 2
    assert await _count(api, select(func.count()).select_from(RecordedCall)) == 0
    async with api.app.state.sessionmaker() as session:
        assert await verify_all(session) == []
    again = await _decide(dev, agent_id, request["id"], "deny")
    assert again.status_code == 409 and again.json()["status"] == "executed"


async def test_a_denied_call_is_not_run_and_the_model_is_told(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev, agent_id = await _agent(api)
    ran: list[str] = []
    real_run_tool = loop.run_tool

    async def counting(*args: Any) -> str:
        ran.append(args[1])
        return await real_run_tool(*args)

    monkeypatch.setattr(loop, "run_tool", counting)
    openrouter.call_tool("current_time", {})
    openrouter.echo()
    body = await _say(dev, agent_id)
    [request] = await _pending(dev, agent_id)
    assert (await _decide(dev, agent_id, request["id"], "deny")).status_code == 200
    await _settle()

    assert ran == []
    [output] = _tool_outputs(openrouter)
    assert output == "Error: the call to current_time was not run: the owner denied it."
    assert await _reply_of(api, body["message"]["id"]) == output


async def test_an_expired_request_counts_as_denied_when_the_message_comes_due(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _agent(api)
    openrouter.call_tool("current_time", {})
    openrouter.echo()
    body = await _say(dev, agent_id)
    [request] = await _pending(dev, agent_id)
    message_id = body["message"]["id"]
    async with api.app.state.sessionmaker() as session:
        inbound = await session.get(Message, message_id)
        assert inbound is not None and inbound.status == "pending"
        assert inbound.next_attempt_at is not None  # due again when the request expires
        assert await approvals.waits_for(session, message_id)
        past = inbound.next_attempt_at - timedelta(minutes=31)
        await session.execute(
            update(ToolApproval).where(ToolApproval.id == request["id"]).values(expires_at=past)
        )
        await session.execute(  # accepted long ago: the sweeper takes it
            update(Message)
            .where(Message.id == message_id)
            .values(next_attempt_at=past, created_at=past - timedelta(minutes=1))
        )
        await session.commit()

    late = await _decide(dev, agent_id, request["id"], "approve")
    assert late.status_code == 409 and late.json()["status"] == "expired"
    assert await sweep_once(api.app.state.sessionmaker) == 1
    await _settle()

    [output] = _tool_outputs(openrouter)
    assert output == (
        "Error: the call to current_time was not run: the owner did not approve it in time."
    )
    listed = await dev.http.get(f"/api/v1/agents/{agent_id}/approvals")
    assert [row["status"] for row in listed.json()["data"]] == ["expired"]


async def test_the_thread_waits_behind_a_message_awaiting_approval(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _agent(api)
    openrouter.call_tool("current_time", {})
    first = await _say(dev, agent_id, "first")
    assert first["status"] == "awaiting_approval"
    openrouter.echo()
    second = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": "second", "contact": "ada", "wait_seconds": 0.3},
    )
    assert second.status_code == 202 and second.json()["status"] == "pending"
    assert len(openrouter.chat_requests) == 1  # the second message was not answered first

    [request] = await _pending(dev, agent_id)
    await _decide(dev, agent_id, request["id"], "approve")
    openrouter.reply("second answer")
    await _settle()
    assert await _reply_of(api, first["message"]["id"]) is not None
    assert await _reply_of(api, second.json()["message"]["id"]) == "second answer"


async def test_an_approved_call_runs_once_when_the_resumed_turn_is_retried(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch, fast_sdk_retries: None
) -> None:
    """After the approved call ran, the next model call fails (retryable): the retry replays
    the turn and reuses the call's stored output instead of running the tool again."""
    dev, agent_id = await _agent(api)
    ran: list[str] = []
    real_run_tool = loop.run_tool

    async def counting(*args: Any) -> str:
        ran.append(args[1])
        return await real_run_tool(*args)

    monkeypatch.setattr(loop, "run_tool", counting)
    openrouter.call_tool("current_time", {"timezone": "Asia/Tokyo"})
    body = await _say(dev, agent_id)
    [request] = await _pending(dev, agent_id)
    openrouter.fail(503, times=3)  # the SDK's retries, then a later attempt
    await _decide(dev, agent_id, request["id"], "approve")
    await _settle()
    assert ran == ["current_time"]
    message_id = body["message"]["id"]
    async with api.app.state.sessionmaker() as session:
        inbound = await session.get(Message, message_id)
        assert inbound is not None and inbound.status == "pending" and inbound.attempts == 1
        await session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(next_attempt_at=inbound.created_at - timedelta(seconds=1))
        )
        await session.commit()

    openrouter.echo()
    assert await sweep_once(api.app.state.sessionmaker) == 1
    await _settle()
    assert ran == ["current_time"]  # not again
    [output] = _tool_outputs(openrouter)
    assert "Asia/Tokyo" in output
    assert await _reply_of(api, message_id) == output


async def test_only_one_turn_gets_to_run_an_approved_call(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _agent(api)
    openrouter.call_tool("current_time", {})
    await _say(dev, agent_id)
    [request] = await _pending(dev, agent_id)
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(ToolApproval).where(ToolApproval.id == request["id"]).values(status="approved")
        )
        await session.commit()
        decision = (await approvals.decisions(session, request["message_id"]))[
            request["tool_call_id"]
        ]
    keyring = api.app.state.keyring
    claims = await asyncio.gather(
        *(approvals.claim(api.app.state.sessionmaker, decision, keyring) for _ in range(4))
    )
    assert sorted(action for action, _ in claims) == ["run", "unknown", "unknown", "unknown"]
    await approvals.record_output(api.app.state.sessionmaker, keyring, decision.id, "12:00")
    assert await approvals.claim(api.app.state.sessionmaker, decision, keyring) == (
        "reuse",
        "12:00",
    )


async def test_run_code_waits_for_approval_by_default(api: Api, openrouter: FakeOpenRouter) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["run_code", "current_time"])
    policy = await dev.http.get(f"/api/v1/agents/{agent['id']}/approval-policy")
    assert policy.status_code == 200
    assert policy.json() == {"expiry_minutes": 60, "tools": {}, "gated": ["run_code"]}
    switched = await dev.http.put(
        f"/api/v1/agents/{agent['id']}/approval-policy", json={"tools": {"run_code": False}}
    )
    assert switched.json()["gated"] == []


async def test_approvals_are_the_owners_alone_and_bad_input_is_refused(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _agent(api)
    openrouter.call_tool("current_time", {})
    await _say(dev, agent_id)
    [request] = await _pending(dev, agent_id)
    other, other_agent = await _agent(api)

    assert (await other.http.get(f"/api/v1/agents/{agent_id}/approvals")).status_code == 404
    assert (await _decide(other, agent_id, request["id"], "approve")).status_code == 404
    assert (await _decide(other, other_agent, request["id"], "approve")).status_code == 404
    bad = await _decide(dev, agent_id, request["id"], "maybe")
    assert bad.status_code == 422
    unknown_tool = await dev.http.put(
        f"/api/v1/agents/{agent_id}/approval-policy", json={"tools": {"no_such_tool": True}}
    )
    assert unknown_tool.status_code == 422 and "no_such_tool" in unknown_tool.text
    too_long = await dev.http.put(
        f"/api/v1/agents/{agent_id}/approval-policy", json={"expiry_minutes": 0}
    )
    assert too_long.status_code == 422
    [still] = await _pending(dev, agent_id)
    assert still["status"] == "pending"


async def test_a_streamed_message_ends_with_the_approval_event(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _agent(api)
    openrouter.call_tool("current_time", {})
    response = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": "What time is it?", "contact": "ada", "stream": True},
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    name, data = events[-1]
    assert name == "approval", events
    [request] = await _pending(dev, agent_id)
    assert data["approvals"] == [request["id"]] and data["retry_at"]
