"""Approvals in the dashboard: a waiting call with Approve and Deny, the tools that wait, and
the decision that lets the turn go on; never another tenant's."""

from __future__ import annotations

from typing import Any

from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.agent.support import Dev, create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api


async def _asked(api: Api, openrouter: FakeOpenRouter) -> tuple[Dev, dict[str, Any], str]:
    dev = await new_dev(api)
    agent = await create_agent(dev, name="Clock", tools=["current_time", "remember"])
    policy = await dev.person.client.post(
        f"/agents/{agent['id']}/approval-policy",
        data={"csrf_token": dev.person.csrf, "gate_current_time": "on", "expiry_minutes": "15"},
    )
    assert policy.status_code == 303 and policy.headers["location"].endswith("outcome=saved")
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    openrouter.call_tool("current_time", {"timezone": "America/Lima"})
    said = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages", json={"text": "Time in Lima?", "contact": "ada"}
    )
    assert said.json()["status"] == "awaiting_approval", said.text
    [request] = (await dev.http.get(f"/api/v1/agents/{agent['id']}/approvals")).json()["data"]
    return dev, agent, str(request["id"])


async def test_a_waiting_call_is_shown_and_approved_from_the_page(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent, approval_id = await _asked(api, openrouter)
    browser = dev.person.client
    shown = await browser.get(f"/agents/{agent['id']}/approvals")
    assert shown.status_code == 200
    assert "America/Lima" in shown.text and f"/approvals/{approval_id}" in shown.text
    assert 'name="gate_current_time" checked' in shown.text
    assert 'name="gate_remember">' in shown.text  # off by default
    assert 'value="15"' in shown.text

    openrouter.echo()
    approved = await browser.post(
        f"/agents/{agent['id']}/approvals/{approval_id}",
        data={"csrf_token": dev.person.csrf, "decision": "approve"},
    )
    assert approved.status_code == 303
    assert approved.headers["location"].endswith("outcome=approved")
    await enqueue.drain()
    await wait_idle()
    after = await browser.get(f"/agents/{agent['id']}/approvals?outcome=approved")
    assert "Approved: the agent goes on" in after.text and "executed" in after.text
    again = await browser.post(
        f"/agents/{agent['id']}/approvals/{approval_id}",
        data={"csrf_token": dev.person.csrf, "decision": "deny"},
    )
    assert again.headers["location"].endswith("outcome=closed")
    audit = (await dev.http.get("/api/v1/audit", params={"limit": 50})).json()["data"]
    assert {"agent.approval_decided", "agent.approval_policy_set"} <= {
        event["action"] for event in audit
    }


async def test_another_tenant_sees_and_decides_nothing(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent, approval_id = await _asked(api, openrouter)
    other = await new_dev(api)
    page = await other.person.client.get(f"/agents/{agent['id']}/approvals")
    assert page.status_code == 404
    decided = await other.person.client.post(
        f"/agents/{agent['id']}/approvals/{approval_id}",
        data={"csrf_token": other.person.csrf, "decision": "approve"},
    )
    assert decided.status_code == 404
    unsafe = await dev.person.client.post(  # no CSRF token: refused
        f"/agents/{agent['id']}/approvals/{approval_id}", data={"decision": "approve"}
    )
    assert unsafe.status_code == 403
    [still] = (await dev.http.get(f"/api/v1/agents/{agent['id']}/approvals")).json()["data"]
    assert still["status"] == "pending"
    bad = await dev.person.client.post(
        f"/agents/{agent['id']}/approval-policy",
        data={"csrf_token": dev.person.csrf, "expiry_minutes": "0"},
    )
    assert bad.status_code == 422 and "whole minutes" in bad.text
