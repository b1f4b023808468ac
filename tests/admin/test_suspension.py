"""Suspending and reinstating accounts and agents through the admin API: what the suspended
person meets (keys and sessions refused with the reason), their agents, notices and audit rows."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from lunogen.agent.models import Agent
from lunogen.audit.models import AuditEvent
from lunogen.notification.models import Notification, OutboundEmail
from tests.account.support import rows
from tests.admin.support import staff
from tests.agent.support import Dev, create_agent, new_dev
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)
from tests.helpers import Api, Signed

REASON = "Sending spam through the Telegram channel"


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    """Agents here can deploy: the model provider is the fake OpenRouter on 127.0.0.1."""
    return openrouter_settings(openrouter)


async def _admin(api: Api) -> Signed:
    admin = await api.sign_up(api.unique_email("admin"))
    await api.make_admin(admin)
    return admin


async def _post(person: Signed, path: str, body: Any) -> Any:
    return await person.client.post(f"/api/v1/admin{path}", json=body, headers=person.headers)


async def _running_agent(dev: Dev, name: str = "Support bot") -> str:
    agent = await create_agent(dev, name=name)
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["status"] == "running"
    return str(agent["id"])


async def _status(api: Api, agent_id: str) -> str:
    found = await rows(api, select(Agent.status).where(Agent.id == agent_id))
    return str(found[0])


async def _audit(api: Api, action: str) -> list[AuditEvent]:
    return await rows(api, select(AuditEvent).where(AuditEvent.action == action))


async def _kinds(api: Api, user_id: str) -> list[str]:
    found = await rows(
        api,
        select(Notification.kind)
        .where(Notification.user_id == user_id)
        .order_by(Notification.created_at),
    )
    return [str(kind) for kind in found]


def _refused(response: Any) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "Account suspended"
    assert body["message"] == f"Account suspended: {REASON}"
    assert "To appeal, write to" in body["appeal"]


async def test_suspension_refuses_keys_and_sessions_and_stops_agents(api: Api) -> None:
    admin = await _admin(api)
    dev = await new_dev(api)
    running = await _running_agent(dev)
    draft = (await create_agent(dev, name="Draft bot"))["id"]

    response = await _post(admin, f"/users/{dev.id}/suspend", {"reason": f"  {REASON} "})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["suspended"] is True
    assert body["suspended_reason"] == REASON
    assert body["stopped_agents"] == [running]

    assert await _status(api, running) == "stopped"
    assert await _status(api, draft) == "draft"
    _refused(await dev.http.get("/api/v1/agents"))
    _refused(await dev.http.post(f"/api/v1/agents/{running}/start"))
    _refused(await dev.person.client.get("/api/v1/me"))
    _refused(
        await dev.person.client.post(f"/api/v1/agents/{draft}/deploy", headers=dev.person.headers)
    )
    assert await _status(api, draft) == "draft"

    events = await _audit(api, "admin.user_suspended")
    assert len(events) == 1
    event = events[0]
    assert (event.actor_user_id, event.subject_user_id) == (admin.id, dev.id)
    assert (event.target_type, event.target_id) == ("user", dev.id)
    assert event.details == {"reason": REASON, "stopped_agents": [running]}

    assert "account.suspended" in await _kinds(api, dev.id)
    mails = [body for row, body in await api.emails(dev.person.email) if "suspended" in row.subject]
    assert len(mails) == 1 and REASON in mails[0]


async def test_reinstated_account_works_again_with_agents_left_stopped(api: Api) -> None:
    admin = await _admin(api)
    dev = await new_dev(api)
    agent = await _running_agent(dev)
    assert (await _post(admin, f"/users/{dev.id}/suspend", {"reason": REASON})).status_code == 200

    response = await _post(admin, f"/users/{dev.id}/reinstate", {"reason": "Appeal accepted"})
    assert response.status_code == 200, response.text
    assert response.json()["suspended"] is False
    assert response.json()["suspended_reason"] is None

    assert (await dev.http.get("/api/v1/agents")).status_code == 200
    assert (await dev.person.client.get("/api/v1/me")).status_code == 200
    assert await _status(api, agent) == "stopped"
    started = await dev.http.post(f"/api/v1/agents/{agent}/start")
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "running"

    events = await _audit(api, "admin.user_reinstated")
    assert [(e.actor_user_id, e.subject_user_id) for e in events] == [(admin.id, dev.id)]
    assert events[0].details == {"reason": "Appeal accepted", "suspended_for": REASON}
    assert (await _kinds(api, dev.id))[-1] == "account.reinstated"


async def test_admin_cannot_suspend_themselves_or_twice(api: Api) -> None:
    admin = await _admin(api)
    other = await api.sign_up()

    itself = await _post(admin, f"/users/{admin.id}/suspend", {"reason": REASON})
    assert itself.status_code == 409
    assert "your own account" in itself.json()["message"]
    assert (await admin.client.get("/api/v1/me")).status_code == 200

    assert (await _post(admin, f"/users/{other.id}/reinstate", {"reason": "x"})).status_code == 409
    assert (await _post(admin, f"/users/{other.id}/suspend", {"reason": REASON})).status_code == 200
    again = await _post(admin, f"/users/{other.id}/suspend", {"reason": "Other"})
    assert again.status_code == 409
    assert again.json()["error"] == "Account already suspended"
    assert len(await _audit(api, "admin.user_suspended")) == 1


async def test_suspended_admin_loses_the_console_too(api: Api) -> None:
    first, second = await _admin(api), await _admin(api)
    assert (
        await _post(first, f"/users/{second.id}/suspend", {"reason": REASON})
    ).status_code == 200
    refused = await _post(second, f"/users/{first.id}/suspend", {"reason": "Revenge"})
    _refused(refused)
    assert (await first.client.get("/api/v1/me")).status_code == 200


async def test_only_admins_suspend(api: Api) -> None:
    person = await api.sign_up()
    support = await staff(api, "support")
    target = await api.sign_up()
    for caller in (person, support):
        for path in (f"/users/{target.id}/suspend", f"/users/{target.id}/reinstate"):
            response = await _post(caller, path, {"reason": REASON})
            assert response.status_code == 403
            assert response.json()["message"] == "This endpoint requires the admin role"
    anonymous = await api.new_client().post(
        f"/api/v1/admin/users/{target.id}/suspend", json={"reason": REASON}
    )
    assert anonymous.status_code == 401
    assert (await target.client.get("/api/v1/me")).status_code == 200
    assert await _audit(api, "admin.user_suspended") == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": ""},
        {"reason": "   "},
        {"reason": "x" * 501},
        {"reason": 7},
        {"reason": REASON, "x": 1},
    ],
)
async def test_bad_reasons_are_422(api: Api, body: dict[str, Any]) -> None:
    admin = await _admin(api)
    target = await api.sign_up()
    response = await _post(admin, f"/users/{target.id}/suspend", body)
    assert response.status_code == 422, response.text
    assert (await target.client.get("/api/v1/me")).status_code == 200


async def test_unknown_accounts_and_malformed_bodies(api: Api) -> None:
    admin = await _admin(api)
    for user_id in ("00000000-0000-0000-0000-000000000000", "x" * 300):
        response = await _post(admin, f"/users/{user_id}/suspend", {"reason": REASON})
        assert response.status_code == 404
        assert response.json()["error"] == "User not found"
    target = await api.sign_up()
    broken = await admin.client.post(
        f"/api/v1/admin/users/{target.id}/suspend",
        content=b"{not json",
        headers={**admin.headers, "content-type": "application/json"},
    )
    assert broken.status_code == 400


# Agents across tenants -------------------------------------------------------------------------


async def test_admin_lists_agents_across_tenants_and_the_read_is_audited(api: Api) -> None:
    admin = await _admin(api)
    alice, bob = await new_dev(api), await new_dev(api)
    running = await _running_agent(alice, "Alice bot")
    drafted = (await create_agent(bob, name="Bob bot"))["id"]

    everything = await admin.client.get("/api/v1/admin/agents")
    assert everything.status_code == 200, everything.text
    body = everything.json()
    assert body["total"] == 2
    by_id = {a["id"]: a for a in body["data"]}
    assert by_id[running]["owner_email"] == alice.person.email
    assert by_id[drafted]["status"] == "draft"

    only = await admin.client.get(
        "/api/v1/admin/agents", params={"status": "running", "owner_email": alice.person.email}
    )
    assert [a["id"] for a in only.json()["data"]] == [running]
    none = await admin.client.get("/api/v1/admin/agents", params={"owner_email": "nobody@"})
    assert none.json() == {"data": [], "total": 0, "limit": 20, "offset": 0}
    paged = await admin.client.get("/api/v1/admin/agents", params={"limit": 1, "offset": 1})
    assert len(paged.json()["data"]) == 1 and paged.json()["total"] == 2

    viewed = await _audit(api, "admin.viewed")
    assert len(viewed) == 4
    assert all(e.actor_user_id == admin.id and e.target_type == "agents" for e in viewed)
    assert {e.details["status"] for e in viewed} == {None, "running"}

    one = await admin.client.get(f"/api/v1/admin/agents/{drafted}")
    assert one.status_code == 200
    assert (one.json()["owner_email"], one.json()["status"]) == (bob.person.email, "draft")
    looked = [e for e in await _audit(api, "admin.viewed") if e.target_type == "agent"]
    assert [(e.target_id, e.subject_user_id, e.actor_user_id) for e in looked] == [
        (drafted, bob.id, admin.id)
    ]
    unknown = await admin.client.get("/api/v1/admin/agents/00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404
    assert (await bob.http.get(f"/api/v1/admin/agents/{drafted}")).status_code == 403
    bad = await admin.client.get("/api/v1/admin/agents", params={"status": "flying"})
    assert bad.status_code == 422
    assert (await alice.http.get("/api/v1/admin/agents")).status_code == 403


async def test_suspended_agent_cannot_be_started_until_reinstated(api: Api) -> None:
    admin = await _admin(api)
    dev = await new_dev(api)
    agent = await _running_agent(dev)

    response = await _post(admin, f"/agents/{agent}/suspend", {"reason": REASON})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "suspended"
    assert response.json()["suspended_reason"] == REASON
    assert response.json()["owner_email"] == dev.person.email

    for action in ("start", "deploy", "restart"):
        refused = await dev.http.post(f"/api/v1/agents/{agent}/{action}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "Agent is suspended"
    assert await _status(api, agent) == "suspended"
    assert (await dev.http.get("/api/v1/agents")).status_code == 200  # the account is fine
    assert "agent.suspended" in await _kinds(api, dev.id)
    again = await _post(admin, f"/agents/{agent}/suspend", {"reason": REASON})
    assert again.status_code == 409

    lifted = await _post(admin, f"/agents/{agent}/reinstate", {"reason": "Cleaned up"})
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["status"] == "stopped"
    assert lifted.json()["suspended_at"] is None
    started = await dev.http.post(f"/api/v1/agents/{agent}/start")
    assert started.status_code == 200 and started.json()["status"] == "running"
    assert (await _kinds(api, dev.id))[-1] == "agent.reinstated"

    suspended = await _audit(api, "admin.agent_suspended")
    assert [(e.subject_user_id, e.target_id, e.details["reason"]) for e in suspended] == [
        (dev.id, agent, REASON)
    ]
    assert len(await _audit(api, "admin.agent_reinstated")) == 1
    assert (await _post(admin, f"/agents/{agent}/reinstate", {"reason": "x"})).status_code == 409


async def test_agent_suspension_needs_an_admin_and_a_live_agent(api: Api) -> None:
    admin = await _admin(api)
    dev = await new_dev(api)
    agent = await _running_agent(dev)
    own = await dev.person.client.post(
        f"/api/v1/admin/agents/{agent}/suspend",
        json={"reason": REASON},
        headers=dev.person.headers,
    )
    assert own.status_code == 403
    missing = await _post(
        admin, "/agents/00000000-0000-0000-0000-000000000000/suspend", {"reason": "x"}
    )
    assert missing.status_code == 404
    assert missing.json()["error"] == "Agent not found"
    assert (await _post(admin, f"/agents/{agent}/suspend", {"reason": ""})).status_code == 422
    assert await _status(api, agent) == "running"


# System health ---------------------------------------------------------------------------------


async def test_health_counts_what_waits_and_what_gave_up(api: Api) -> None:
    admin = await _admin(api)
    before = await admin.client.get("/api/v1/admin/health")
    assert before.status_code == 200, before.text
    body = before.json()
    assert body["database"] == "ok"
    assert body["redis"] in ("ok", "not configured")
    assert body["job_broker"] in ("in-process", "redis streams")
    assert (body["sandbox_backend"] is None) == (body["sandbox_problem"] is not None)
    queues = {q["name"]: q for q in body["queues"]}
    assert set(queues) == {
        "turns",
        "deliveries",
        "emails",
        "channel_unregistrations",
        "stripe_cancellations",
        "data_exports",
        "moderation_checks",
    }
    assert queues["emails"]["failed"] == 0

    async with api.app.state.sessionmaker() as session:
        session.add(
            OutboundEmail(
                to_address="gone@example.com",
                subject="x",
                body_encrypted=api.app.state.keyring.encrypt("x"),
                status="failed",
            )
        )
        await session.commit()
    after = (await admin.client.get("/api/v1/admin/health")).json()
    assert {q["name"]: q for q in after["queues"]}["emails"]["failed"] == 1
    assert after["status"] == "degraded"

    person = await api.sign_up()
    assert (await person.client.get("/api/v1/admin/health")).status_code == 403
    assert (await api.new_client().get("/api/v1/admin/health")).status_code == 401
