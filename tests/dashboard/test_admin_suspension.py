"""Suspensions in the admin console, used as a browser would: the suspend and reinstate forms of
an account, the page a suspended person meets, every owner's agents with their own suspension,
and the audit rows of an admin's reads. For anyone but an admin, each URL is the 404 page."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, expect
from sqlalchemy import select

from lunogen.account.models import User
from lunogen.agent.models import Agent
from lunogen.audit.models import AuditEvent
from tests.agent.support import Dev, create_agent, new_dev
from tests.dashboard.browser import fits, sign_in
from tests.helpers import Api, Signed

NOT_FOUND = "There is nothing here, or it is not yours to see."
REASON = "Phishing links sent to customers"


async def _admin(api: Api) -> Signed:
    person = await api.sign_up(api.unique_email("admin"))
    await api.make_admin(person)
    return person


async def _post(person: Signed, path: str, **fields: str) -> httpx.Response:
    return await person.client.post(path, data={"csrf_token": person.csrf, **fields})


async def _events(api: Api, action: str) -> list[AuditEvent]:
    async with api.app.state.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        return list((await session.execute(query.order_by(AuditEvent.created_at))).scalars())


async def _user(api: Api, user_id: str) -> User:
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user


async def _agent(api: Api, agent_id: str) -> Agent:
    async with api.app.state.sessionmaker() as session:
        agent = await session.get(Agent, agent_id)
        assert agent is not None
        return agent


async def _running(dev: Dev) -> str:
    agent = await create_agent(dev)
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.json()["status"] == "running", deployed.text
    return str(agent["id"])


async def test_suspend_from_the_account_page_and_what_the_person_sees(api: Api) -> None:
    admin = await _admin(api)
    dev = await new_dev(api)
    agent = await _running(dev)

    shown = await admin.client.get(f"/admin/users/{dev.id}")
    assert f'action="/admin/users/{dev.id}/suspend"' in shown.text
    viewed = await _events(api, "admin.viewed")
    assert [(e.actor_user_id, e.subject_user_id, e.target_type) for e in viewed] == [
        (admin.id, dev.id, "user")
    ]

    done = await _post(admin, f"/admin/users/{dev.id}/suspend", suspension_reason=REASON)
    assert done.status_code == 303
    assert done.headers["location"] == f"/admin/users/{dev.id}?outcome=suspended#suspension-h"
    assert (await _user(api, dev.id)).suspended_reason == REASON
    assert (await _agent(api, agent)).status == "stopped"
    page = await admin.client.get(f"/admin/users/{dev.id}?outcome=suspended")
    assert "Account suspended: its keys and sessions are refused" in page.text
    assert '<dd id="status">suspended</dd>' in page.text
    assert f'action="/admin/users/{dev.id}/reinstate"' in page.text

    # The person's dashboard is one page: the reason and how to appeal.
    for path in ("/home", "/agents", "/settings"):
        refused = await dev.person.client.get(path)
        assert refused.status_code == 403, path
        assert REASON in refused.text and "How to appeal" in refused.text
        assert "mailto:" in refused.text
    api_refused = await dev.person.client.get("/api/v1/me")
    assert api_refused.json()["message"] == f"Account suspended: {REASON}"

    back = await _post(admin, f"/admin/users/{dev.id}/reinstate", suspension_reason="Appeal upheld")
    assert back.status_code == 303
    assert (await dev.person.client.get("/home")).status_code == 200
    assert (await _agent(api, agent)).status == "stopped"
    assert len(await _events(api, "admin.user_suspended")) == 1
    assert len(await _events(api, "admin.user_reinstated")) == 1


async def test_bad_reason_and_self_suspension_are_shown_and_change_nothing(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    empty = await _post(admin, f"/admin/users/{person.id}/suspend", suspension_reason="  ")
    assert empty.status_code == 422
    assert 'role="alert">Reason: say why' in empty.text
    long = await _post(admin, f"/admin/users/{person.id}/suspend", suspension_reason="x" * 501)
    assert long.status_code == 422
    assert (await _user(api, person.id)).suspended_at is None

    own = await admin.client.get(f"/admin/users/{admin.id}")
    assert "You cannot suspend your own account" in own.text
    assert f'action="/admin/users/{admin.id}/suspend"' not in own.text
    forced = await _post(admin, f"/admin/users/{admin.id}/suspend", suspension_reason=REASON)
    assert forced.status_code == 409
    assert "your own account" in forced.text
    assert (await _user(api, admin.id)).suspended_at is None
    assert await _events(api, "admin.user_suspended") == []
    assert (
        await _post(admin, f"/admin/users/{person.id}/reinstate", suspension_reason="x")
    ).status_code == 409


async def test_every_owners_agents_with_their_suspension(api: Api) -> None:
    admin = await _admin(api)
    dev = await new_dev(api)
    agent = await _running(dev)

    listed = await admin.client.get("/admin/agents", params={"owner": dev.person.email})
    assert listed.status_code == 200
    assert f'href="/admin/agents/{agent}"' in listed.text and dev.person.email in listed.text
    none = await admin.client.get("/admin/agents", params={"status": "paused"})
    assert f'href="/admin/agents/{agent}"' not in none.text
    overview = await admin.client.get("/admin")
    assert 'href="/admin/agents"' in overview.text

    shown = await admin.client.get(f"/admin/agents/{agent}")
    assert f'action="/admin/agents/{agent}/suspend"' in shown.text
    views = await _events(api, "admin.viewed")
    assert [e.target_type for e in views] == ["agents", "agents", "agent"]
    assert views[-1].target_id == agent and views[-1].subject_user_id == dev.id

    bad = await _post(admin, f"/admin/agents/{agent}/suspend", reason="")
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    done = await _post(admin, f"/admin/agents/{agent}/suspend", reason=REASON)
    assert done.status_code == 303
    assert (await _agent(api, agent)).status == "suspended"
    start = await dev.http.post(f"/api/v1/agents/{agent}/start")
    assert start.status_code == 409
    again = await _post(admin, f"/admin/agents/{agent}/suspend", reason=REASON)
    assert again.status_code == 409 and "already suspended" in again.text

    lifted = await _post(admin, f"/admin/agents/{agent}/reinstate", reason="Fixed")
    assert lifted.status_code == 303
    assert (await _agent(api, agent)).status == "stopped"
    missing = await admin.client.get("/admin/agents/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


async def test_the_pages_do_not_exist_for_users_and_support(api: Api) -> None:
    dev = await new_dev(api)
    agent = await _running(dev)
    for role in ("user", "support"):
        person = await api.sign_up()
        async with api.app.state.sessionmaker() as session:
            user = await session.get(User, person.id)
            assert user is not None
            user.role = role
            await session.commit()
        for path in ("/admin/agents", f"/admin/agents/{agent}", "/admin/health"):
            response = await person.client.get(path)
            assert response.status_code == 404, (role, path)
            assert NOT_FOUND in response.text
        for path in (
            f"/admin/users/{dev.id}/suspend",
            f"/admin/agents/{agent}/suspend",
            f"/admin/agents/{agent}/reinstate",
        ):
            response = await _post(person, path, reason=REASON)
            assert response.status_code == 404, (role, path)
    assert (await _user(api, dev.id)).suspended_at is None
    assert (await _agent(api, agent)).status == "running"
    assert await _events(api, "admin.viewed") == []


async def test_the_health_page(api: Api) -> None:
    admin = await _admin(api)
    shown = await admin.client.get("/admin/health")
    assert shown.status_code == 200
    assert '<dd id="database">ok</dd>' in shown.text
    assert "Outbound emails" in shown.text and "Replies to send to a channel" in shown.text
    assert 'href="/admin/health"' in (await admin.client.get("/admin")).text


async def test_suspension_in_a_real_browser(browser: Browser, live_server: str, api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    watched = await sign_in(browser, live_server, admin)
    page = watched.page
    await page.goto(f"{live_server}/admin/users/{person.id}")
    await page.fill("input[name=suspension_reason]", REASON)
    await page.click("text=Suspend account")
    await expect(page.locator("main .flash")).to_contain_text("Account suspended")
    await expect(page.locator("#suspended")).to_contain_text(REASON)
    assert await fits(page, 360)
    await page.goto(f"{live_server}/admin/health")
    await expect(page.locator("#database")).to_have_text("ok")
    assert await fits(page, 360)
    watched.check()

    theirs = await sign_in(browser, live_server, person)
    await expect(theirs.page.locator("h1")).to_have_text("Account suspended")
    await expect(theirs.page.locator("#suspension-reason")).to_contain_text(REASON)
    assert await fits(theirs.page, 360)
    theirs.check()
