"""The playground and the runtime log in a real browser (Debian's Chromium, Playwright): a reply
streamed into the page with its tool call and cost, errors in the alert region, the log
followed live, paused and filtered; no CSP violation, nothing fetched from another origin,
usable at 360 px and by keyboard."""

from __future__ import annotations

from decimal import Decimal

import httpx
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select

from lunogen.account.models import User
from lunogen.config import Settings
from lunogen.db import create_engine, create_sessionmaker
from lunogen.runlog.models import AgentLogEvent
from tests.agent import conftest as agent_fixtures
from tests.billing.support import set_available
from tests.dashboard.browser import Watched, fits, watch
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import PASSWORD

# Everything runs on the live server (uvicorn on 127.0.0.1): its worker answers the messages,
# so the turn's live events reach the page.
api_for_live = agent_fixtures.api_for_live
LIVE_EMAIL = "live.dev@example.com"  # the developer `api_for_live` signs up

# Records every text the newest reply bubble shows, in order: streamed text arrives in steps.
RECORD_REPLY_TEXTS = """() => {
  window.replyTexts = [];
  new MutationObserver((records) => {
    for (const record of records) {
      const target = record.target;
      if (target.classList && target.classList.contains("text")
          && target.closest(".msg-assistant")) {
        // The text node each update put in: what the page showed then, even when records
        // are handed over in a batch.
        for (const node of record.addedNodes) window.replyTexts.push(node.textContent);
      }
    }
  }).observe(document.getElementById("conversation"), {childList: true, subtree: true});
}"""


async def _sign_in(browser: Browser, live_server: str) -> Watched:
    page = await browser.new_page()
    watched = watch(page, live_server)
    await page.goto(f"{live_server}/login")
    await page.fill("input[name=email]", LIVE_EMAIL)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{live_server}/home")
    return watched


async def _deploy(client: httpx.AsyncClient, agent_id: str, **changes: object) -> None:
    if changes:
        changed = await client.patch(f"/api/v1/agents/{agent_id}", json=changes)
        assert changed.status_code == 200, changed.text
    deployed = await client.post(f"/api/v1/agents/{agent_id}/deploy")
    assert deployed.status_code == 200, deployed.text


async def _log(settings: Settings, agent_id: str, level: str, message: str) -> None:
    """A line written by another process: no wake-up here, the stream finds it by polling."""
    engine = create_engine(settings.effective_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            session.add(
                AgentLogEvent(agent_id=agent_id, event="note", level=level, message=message)
            )
            await session.commit()
    finally:
        await engine.dispose()


async def _send_by_keyboard(page: Page, *lines: str) -> None:
    box = page.get_by_label("Message")
    await box.focus()
    for index, line in enumerate(lines):
        if index:
            await page.keyboard.press("Shift+Enter")
        await page.keyboard.type(line)
    await page.keyboard.press("Enter")


async def test_the_playground_streams_a_reply_with_its_tool_call_and_cost(
    browser: Browser,
    live_server: str,
    api_for_live: tuple[httpx.AsyncClient, str],
    openrouter: FakeOpenRouter,
) -> None:
    client, agent_id = api_for_live
    await _deploy(client, agent_id, name="Clock", tools=["current_time"])
    watched = await _sign_in(browser, live_server)
    page = watched.page
    await page.goto(f"{live_server}/agents/{agent_id}/playground")
    await expect(page.locator("h1")).to_have_text("Playground: Clock")
    await expect(page.locator("#playground-empty")).to_be_visible()
    await page.evaluate(RECORD_REPLY_TEXTS)

    openrouter.call_tool("current_time", {"timezone": "UTC"}, cost=Decimal("0.000008"))
    openrouter.reply("It is noon in the shop right now", cost=Decimal("0.000042"))
    await _send_by_keyboard(page, "What time is it?", "In UTC please")

    mine = page.locator(".msg-user .text").last
    await expect(mine).to_have_text("What time is it?\nIn UTC please")
    reply = page.locator(".msg-assistant").last
    await expect(reply.locator(".text")).to_have_text("It is noon in the shop right now")
    await expect(reply.locator(".tools li")).to_have_text("Used current_time")
    await expect(reply.locator(".tools li")).to_have_class("tool-ok")
    await expect(reply.locator(".cost")).to_contain_text("US$0.00005 · ")
    await expect(reply.locator(".cost")).to_contain_text("2 model calls")
    await expect(page.locator("#playground-status")).to_contain_text("Reply received")
    await expect(page.locator("#playground-empty")).to_be_hidden()
    await expect(reply).not_to_have_attribute("aria-busy", "true")
    # The reply grew delta by delta before it was whole.
    texts: list[str] = await page.evaluate("window.replyTexts")
    partial = [t for t in texts if t and t != "It is noon in the shop right now"]
    assert partial and all("It is noon in the shop right now".startswith(t) for t in partial)
    assert len(set(partial)) >= 3, texts
    # The field is empty and focused again, ready for the next message.
    await expect(page.get_by_label("Message")).to_have_value("")
    await expect(page.get_by_label("Message")).to_be_focused()

    # The conversation is there on the next visit, with the reply's cost.
    await page.reload()
    await expect(page.locator(".msg-user .text")).to_have_text(["What time is it?\nIn UTC please"])
    await expect(page.locator(".msg-assistant .cost")).to_contain_text("US$0.00005 · ")
    assert await fits(page, 360)
    watched.check()
    await page.close()


async def test_the_playground_says_why_a_message_was_not_answered(
    browser: Browser, live_server: str, api_for_live: tuple[httpx.AsyncClient, str]
) -> None:
    _client, agent_id = api_for_live  # a draft: not running
    watched = await _sign_in(browser, live_server)
    page = watched.page
    await page.goto(f"{live_server}/agents/{agent_id}/playground")
    await expect(page.locator("#not-running")).to_contain_text("This agent is draft")
    await page.get_by_label("Message").fill("Are you there?")
    await page.get_by_role("button", name="Send").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text(
        "The agent is draft; it answers messages only while running"
    )
    await expect(alert).to_contain_text("Deploy or start the agent from its page.")
    # Nothing was stored: the text is back in the field and the conversation is still empty.
    await expect(page.get_by_label("Message")).to_have_value("Are you there?")
    await expect(page.locator("#conversation li")).to_have_count(0)
    await expect(page.locator("#playground-empty")).to_be_visible()
    assert await fits(page, 360)
    watched.check()
    await page.close()


async def test_without_credits_the_playground_says_so(
    browser: Browser,
    live_server: str,
    settings: Settings,
    api_for_live: tuple[httpx.AsyncClient, str],
    openrouter: FakeOpenRouter,
) -> None:
    client, agent_id = api_for_live
    await _deploy(client, agent_id)
    engine = create_engine(settings.effective_database_url)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            user_id = (
                await session.execute(select(User.id).where(User.email == LIVE_EMAIL))
            ).scalar_one()
        await set_available(sessionmaker, user_id, 1)  # a millionth of a credit
    finally:
        await engine.dispose()
    watched = await _sign_in(browser, live_server)
    page = watched.page
    await page.goto(f"{live_server}/agents/{agent_id}/playground")
    await page.get_by_label("Message").fill("Hello?")
    await page.get_by_label("Message").press("Enter")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("The agent could not answer:")
    await expect(alert).to_contain_text("credits")
    await expect(page.locator(".msg-user")).to_have_class("msg msg-user msg-failed")
    assert openrouter.chat_requests == []
    watched.check()
    await page.close()


async def test_the_log_follows_new_lines_live_pauses_and_filters(
    browser: Browser,
    live_server: str,
    settings: Settings,
    api_for_live: tuple[httpx.AsyncClient, str],
    openrouter: FakeOpenRouter,
) -> None:
    client, agent_id = api_for_live
    await _deploy(client, agent_id, name="Logger")
    watched = await _sign_in(browser, live_server)
    page = watched.page
    await page.goto(f"{live_server}/agents/{agent_id}/logs")
    await expect(page.locator("h1")).to_have_text("Runtime log: Logger")
    await expect(page.locator("#log-live")).to_have_text("Live")
    lines = page.locator("#log-lines > li")
    shown = await lines.count()

    # A message to the agent: its lines arrive without a reload.
    openrouter.reply("Hello")
    sent = await client.post(f"/api/v1/agents/{agent_id}/messages", json={"text": "Hi"})
    assert sent.status_code == 200, sent.text
    await expect(page.locator("#log-lines .log-kind", has_text="reply")).to_have_count(1)
    await expect(page.locator("#log-lines .log-kind", has_text="inbound")).to_have_count(1)
    assert await lines.count() > shown

    # Paused, new lines are held and counted; resumed, they show.
    pause = page.get_by_role("button", name="Pause")
    await pause.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#log-pause")).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#log-live")).to_contain_text("Paused")
    shown = await lines.count()
    await _log(settings, agent_id, "info", "Held while paused")
    await expect(page.locator("#log-pause")).to_have_text("Resume (1 new)")
    await expect(lines).to_have_count(shown)
    await page.locator("#log-pause").click()
    await expect(page.locator("#log-pause")).to_have_text("Pause")
    await expect(page.locator("#log-pause")).to_have_attribute("aria-pressed", "false")
    await expect(page.locator("#log-lines .log-message").last).to_have_text("Held while paused")
    await expect(lines).to_have_count(shown + 1)

    # Filtered to warnings: the first page comes from the server, live lines are filtered here.
    await page.get_by_label("Level").select_option("warning")
    await page.get_by_role("button", name="Apply").click()
    await expect(page).to_have_url(f"{live_server}/agents/{agent_id}/logs?level=warning&kind=")
    await expect(page.locator("#log-empty")).to_contain_text("No line matches these filters")
    await expect(page.locator("#log-live")).to_have_text("Live")
    await _log(settings, agent_id, "info", "Just so you know")
    await _log(settings, agent_id, "warning", "Credits are running low")
    await expect(page.locator("#log-lines .log-message")).to_have_text(["Credits are running low"])
    await expect(page.locator("#log-empty")).to_be_hidden()
    await expect(page.locator("#log-lines .log-level")).to_have_text(["warning"])

    await page.get_by_label("Kind").select_option("reply")
    await page.get_by_label("Level").select_option("")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.locator("#log-lines .log-kind")).to_have_text(["reply"])
    assert await fits(page, 360)
    watched.check()
    await page.close()
