"""The Agents and Channels pages in real Chromium: a person creates an agent with the form, adds
a web chat, deploys it and sees it running; the pages fit 360 px, use the keyboard, and neither
break the CSP nor fetch from another origin."""

from __future__ import annotations

import re

from playwright.async_api import Browser, expect

from tests.agent.support import MODEL
from tests.dashboard.browser import fits, sign_in
from tests.helpers import Api


async def test_create_an_agent_add_a_web_chat_and_deploy(
    browser: Browser, live_server: str, api: Api
) -> None:
    person = await api.sign_up()
    watched = await sign_in(browser, live_server, person)
    page = watched.page

    await page.goto(f"{live_server}/agents")
    await expect(page.locator("main")).to_contain_text("No agent yet")
    assert await fits(page, 360)
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.get_by_role("link", name="Create an agent").first.click()
    await expect(page).to_have_url(f"{live_server}/agents/new")

    await page.get_by_label("Name", exact=True).fill("Shop helper")
    await page.get_by_label("Model", exact=True).select_option(MODEL)
    instructions = page.get_by_label("Instructions", exact=True)
    await instructions.fill("Answer questions about the shop.")
    # the count follows the typing (static agents.js; no inline script)
    await expect(page.locator("#instructions-count")).to_have_text("32 of 100,000 characters")
    await page.get_by_label("current_time", exact=True).check()
    assert await fits(page, 360)
    await page.get_by_role("button", name="Create agent").click()

    await expect(page).to_have_url(re.compile(r"/agents/[0-9a-f-]{36}\?outcome=created$"))
    await expect(page.locator("h1")).to_have_text("Shop helper")
    await expect(page.locator("#agent-status")).to_have_text("draft")
    agent_url = page.url.split("?")[0]

    await page.get_by_role("link", name="Manage channels").click()
    await expect(page.locator("main")).to_contain_text("No channel yet")
    await page.get_by_role("link", name="Add a web chat").click()
    await page.get_by_label("Title", exact=True).fill("Ask the shop")
    await page.get_by_label(re.compile("Allowed sites")).fill("https://shop.example.com")
    assert await fits(page, 360)
    await page.get_by_role("button", name="Add Web chat").click()
    await expect(page.locator(".flash")).to_have_text("Channel added.")
    snippet = page.locator("code[id^=snippet-]")
    await expect(snippet).to_contain_text(f'<script src="{live_server}/chat/widget.js"')
    assert await fits(page, 360)

    # copy the snippet with the keyboard: focus the Copy button, press Enter
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    copy = page.locator("button[data-copy^=snippet-]")
    await copy.focus()
    await page.keyboard.press("Enter")
    await expect(copy).to_have_text("Copied")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == await snippet.text_content()

    await page.goto(agent_url)
    await page.set_viewport_size({"width": 1280, "height": 800})
    deploy = page.get_by_role("button", name="Deploy")
    await deploy.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".flash")).to_have_text("Deployed: the agent is running.")
    await expect(page.locator("#agent-status")).to_have_text("running")
    await expect(page.get_by_role("button", name="Stop")).to_be_visible()
    assert await fits(page, 360)

    await page.goto(f"{live_server}/agents")
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(page.locator("tbody")).to_contain_text("running")
    assert await fits(page, 360)

    for kind in ("webhook", "telegram", "whatsapp"):
        await page.goto(f"{agent_url}/channels/new/{kind}")
        await expect(page.locator("h2#guide-h")).to_have_text("Setup")
        assert await fits(page, 360), kind
    await page.goto(f"{agent_url}/edit")
    await expect(page.locator("#instructions-count")).to_have_text("32 of 100,000 characters")
    assert await fits(page, 360)

    await page.goto(f"{agent_url}/delete")
    await expect(page.locator("main")).to_contain_text("purged after 30 days")
    assert await fits(page, 360)
    watched.check()
