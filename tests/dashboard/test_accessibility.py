"""Every dashboard page, as a signed-in person with an agent, a channel, a conversation and a
skill sees it: axe-core finds no serious or critical violation (light and dark), the page fits
360 px without horizontal scrolling, no CSP violation, nothing fetched from another origin.

A screenshot of each page is kept under `LUNOGEN_SCREENSHOTS_DIR` (default
`artifacts/screenshots`, which CI keeps as artifacts)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

from tests.agent.support import create_agent, new_dev
from tests.dashboard.browser import fits, sign_in
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import PASSWORD, Api
from tests.skill.support import clean_package

AXE = (Path(__file__).parent / "vendor" / "axe-4.14.1.min.js").read_text()
SHOTS = Path(os.environ.get("LUNOGEN_SCREENSHOTS_DIR", "artifacts/screenshots"))


async def _violations(page: Page) -> list[dict[str, Any]]:
    result: dict[str, Any] = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def _world(api: Api, openrouter: FakeOpenRouter) -> tuple[Any, dict[str, str]]:
    """A person with one of everything a page can show; the paths to visit."""
    dev = await new_dev(api)
    agent = await create_agent(
        dev,
        name="Shop helper",
        tools=["current_time"],
        channels=[{"type": "webchat", "allowed_origins": ["https://shop.example"]}],
    )
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    openrouter.reply("Hello from the shop")
    said = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages", json={"text": "Hi", "contact": "ada"}
    )
    thread = said.json()["message"]["thread_id"]
    gated = await dev.http.put(  # a tool call waiting for approval, on the Approvals page
        f"/api/v1/agents/{agent['id']}/approval-policy", json={"tools": {"current_time": True}}
    )
    assert gated.status_code == 200, gated.text
    openrouter.call_tool("current_time", {"timezone": "Europe/Paris"})
    asked = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages", json={"text": "Time?", "contact": "bo"}
    )
    assert asked.json()["status"] == "awaiting_approval", asked.text
    edited = await dev.http.patch(  # version 2, not deployed: a diff and the notice
        f"/api/v1/agents/{agent['id']}", json={"instructions": "Greet people.\nSell bikes."}
    )
    assert edited.status_code == 200, edited.text
    capped = await dev.http.put(  # caps and a period's spend, on the spend caps pages
        f"/api/v1/agents/{agent['id']}/caps", json={"daily_credits": "5", "turn_tokens": 9000}
    )
    assert capped.status_code == 200, capped.text
    await _mcp_server(api, dev, agent["id"])  # a listed server with allowed tools and an error
    schedule_id = await _schedule(api, dev, agent["id"])  # next runs, a run in its history
    skill = (await dev.http.post("/api/v1/skills", json=clean_package())).json()
    await api.make_admin(dev.person)  # the admin console's pages too
    moving = await dev.http.post(  # a pending email change: in Settings, and its link's page
        "/api/v1/me/email", json={"new_email": "moving@example.org", "password": PASSWORD}
    )
    assert moving.status_code == 202, moving.text
    [(_mail, text)] = await api.emails("moving@example.org")
    confirm = re.search(r"/settings/email/confirm/[A-Za-z0-9_\-]+", text)
    assert confirm
    aid = agent["id"]
    paths = {
        "home": "/home",
        "agents": "/agents",
        "agent-new": "/agents/new",
        "agent": f"/agents/{aid}",
        "agent-edit": f"/agents/{aid}/edit",
        "channels": f"/agents/{aid}/channels",
        "playground": f"/agents/{aid}/playground",
        "logs": f"/agents/{aid}/logs",
        "conversations": f"/agents/{aid}/conversations",
        "conversation": f"/agents/{aid}/conversations/{thread}",
        "agent-approvals": f"/agents/{aid}/approvals",
        "skills": "/skills",
        "skill-new": "/skills/new",
        "skill": f"/skills/{skill['id']}",
        "usage": "/usage",
        "usage-caps": "/usage/caps",
        "agent-caps": f"/agents/{aid}/caps",
        "agent-mcp": f"/agents/{aid}/mcp",
        "agent-schedules": f"/agents/{aid}/schedules",
        "agent-schedule": f"/agents/{aid}/schedules/{schedule_id}",
        "billing": "/billing",
        "keys": "/keys",
        "notifications": "/notifications",
        "security": "/security",
        "settings": "/settings",
        "settings-export": "/settings/export",
        "settings-email-confirm": confirm.group(0),
        "admin": "/admin",
        "admin-users": "/admin/users",
        "admin-user": f"/admin/users/{dev.id}",
        "admin-skills": "/admin/skills",
        "admin-skill": f"/admin/skills/{skill['id']}",
        "admin-policies": "/admin/policies",
        "admin-moderation": "/admin/moderation",
        "admin-moderation-rules": "/admin/moderation/rules",
        "agent-appeal": f"/agents/{aid}/appeal",
        "privacy-versions": "/privacy/versions",
        "agent-versions": f"/agents/{aid}/versions",
        "agent-version": f"/agents/{aid}/versions/2",
    }
    return dev, paths


async def _schedule(api: Api, dev: Any, agent_id: str) -> str:
    """A schedule that ran once (fired with a chosen clock)."""
    from datetime import datetime

    from lunogen.schedule.firing import fire_due
    from lunogen.worker import enqueue
    from lunogen.worker.broker import wait_idle

    made = await dev.http.post(
        f"/api/v1/agents/{agent_id}/schedules",
        json={
            "name": "Morning digest with a rather long name to wrap",
            "kind": "cron",
            "cron": "0 9 * * 1-5",
            "timezone": "Europe/Berlin",
            "prompt": "Summarise the news.",
            "run_cap_credits": "0.5",
            "day_cap_credits": "2",
        },
    )
    assert made.status_code == 201, made.text
    first = datetime.fromisoformat(made.json()["next_run_at"].replace("Z", "+00:00"))
    await fire_due(api.app.state.sessionmaker, api.app.state.keyring, now=first)
    await enqueue.drain()
    await wait_idle()
    return str(made.json()["id"])


async def _mcp_server(api: Api, dev: Any, agent_id: str) -> None:
    """An MCP server as a listing leaves it (written through the service: no server runs)."""
    from lunogen.tool.mcp import service as mcp_service
    from lunogen.tool.mcp.client import ListedTool
    from lunogen.tool.mcp.models import McpServer

    created = await dev.http.post(
        f"/api/v1/agents/{agent_id}/mcp-servers",
        json={
            "name": "orders",
            "url": "https://example.com/mcp/" + "long-path-" * 8,
            "auth": "oauth",
        },
    )
    assert created.status_code == 201, created.text
    tools = [
        ListedTool("lookup_order", None, "Look up an order by id.", {"type": "object"}, True, None),
        ListedTool(
            "cancel_order_and_refund_the_customer_right_away", "Cancel", "Cancel.", {}, False, True
        ),
    ]
    async with api.app.state.sessionmaker() as session:
        row = await session.get(McpServer, created.json()["id"])
        assert row is not None
        mcp_service.store_listing(row, tools)
        row.allowed_tools = ["lookup_order"]
        row.last_error = "The MCP server answered HTTP 503: " + "unavailable " * 20
        await session.commit()


async def test_every_page_passes_axe_fits_360_px_and_stays_on_its_origin(
    browser: Browser, live_server: str, api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, paths = await _world(api, openrouter)
    watched = await sign_in(browser, live_server, dev.person)
    page = watched.page
    await page.add_init_script(script=AXE)  # through the browser, not the page: CSP unchanged
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems: dict[str, Any] = {}
    for name, path in paths.items():
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.emulate_media(color_scheme="light")
        response = await page.goto(f"{live_server}{path}")
        assert response is not None and response.status == 200, (name, path)
        found = await _violations(page)
        await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        await page.emulate_media(color_scheme="dark")
        found += [{**v, "dark": True} for v in await _violations(page)]
        if not await fits(page, 360):
            found.append({"id": "horizontal-scroll-at-360px"})
        await page.screenshot(path=str(SHOTS / f"{name}-360-dark.png"), full_page=True)
        if found:
            problems[path] = found
    assert problems == {}
    watched.check()
