"""A new person's whole first visit, in real Chromium against the live server, never touching
the API: register, verify, create an agent, add a web chat, deploy, talk to it in the
playground (streamed), see its log line arrive live, see the usage and the debit, buy credits
through the fake Stripe, create and revoke a key, sign out. Every page stays CSP-clean and on
its origin (Stripe's checkout page is the one navigation away, by design). The same start
again with the keyboard alone."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from lunogen.config import Settings
from tests.agent.support import MODEL
from tests.billing.stripe_support import billing_settings, deliver
from tests.dashboard.browser import Watched, fits, watch
from tests.dashboard.test_browser import _emailed_token
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.fakes.stripe import (  # noqa: F401 (fixtures)
    FakeStripe,
    stripe_fake,
    stripe_server,
)

PASSWORD = "correct staple horse battery"


@pytest.fixture
def settings_overrides(
    openrouter: FakeOpenRouter,
    stripe_fake: FakeStripe,  # noqa: F811
) -> dict[str, object]:
    return {**openrouter_settings(openrouter), **billing_settings(stripe_fake)}


async def _tab_to(page: Page, target: Locator, limit: int) -> None:
    """Press Tab until `target` has the focus (at most `limit` times), as a person would."""
    for _ in range(limit):
        if await target.evaluate("el => el === document.activeElement"):
            return
        await page.keyboard.press("Tab")
    await expect(target).to_be_focused()


async def _registered(page: Page, base: str, settings: Settings, email: str) -> None:
    await page.goto(f"{base}/register")
    await page.fill("input[name=name]", "Journey Person")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    for name in ("age_confirmed", "accept_terms", "accept_privacy"):
        await page.check(f"input[name={name}]")
    await page.click("button[type=submit]")
    problem = page.locator(".error")
    if await problem.count():
        raise AssertionError(await problem.inner_text())
    await expect(page.locator("h1")).to_have_text("Check your inbox", timeout=10_000)
    token = await _emailed_token(settings, email)
    await page.goto(f"{base}/verify?token={token}")
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Email verified")


async def test_a_new_persons_first_visit(
    browser: Browser,
    live_server: str,
    settings: Settings,
    openrouter: FakeOpenRouter,
    stripe_fake: FakeStripe,  # noqa: F811
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    watched: Watched = watch(page, live_server)
    await _registered(page, live_server, settings, "journey@example.com")

    # Sign in: the home page shows the first steps.
    await page.goto(f"{live_server}/login")
    await page.fill("input[name=email]", "journey@example.com")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{live_server}/home")
    await expect(page.locator("main")).to_contain_text("Your first agent, in three steps")

    # Create an agent.
    await page.click("section.steps >> text=Create an agent")
    await page.fill("input[name=name]", "Shop helper")
    await page.select_option("select[name=model]", MODEL)
    await page.fill("textarea[name=instructions]", "Answer questions about the shop.")
    await page.click("text=Create agent")
    await expect(page.locator("h1")).to_have_text("Shop helper")
    agent_url = page.url.split("?")[0]

    # Add a web chat, and deploy.
    await page.click("nav.agent-tabs >> text=Channels")
    await page.click("text=Add Web chat")
    await page.fill("textarea[name=allowed_origins]", "https://shop.example")
    await page.click("form >> text=Add Web chat")
    await expect(page.locator("main")).to_contain_text("https://shop.example")
    await expect(page.locator("main")).to_contain_text('data-channel="')
    await page.goto(agent_url)
    await page.click("button:has-text('Deploy')")
    await expect(page.locator("#agent-status")).to_have_text("running")

    # The log, live: open it in a second tab, then talk in the playground.
    logs = await context.new_page()
    log_watch = watch(logs, live_server)
    await logs.goto(f"{agent_url}/logs")
    await expect(logs.locator("h1")).to_contain_text("Runtime log")
    openrouter.reply("The shop opens at nine, every day")
    await page.click("nav.agent-tabs >> text=Playground")
    await page.get_by_label("Message").fill("When do you open?")
    await page.get_by_label("Message").press("Enter")
    reply = page.locator(".msg-assistant").last
    # (Generous waits: CI runs this beside other work on two cores.)
    await expect(reply.locator(".text")).to_have_text(
        "The shop opens at nine, every day", timeout=20_000
    )
    await expect(reply.locator(".cost")).to_contain_text("US$", timeout=20_000)
    await expect(logs.locator("main")).to_contain_text("Replied to", timeout=20_000)  # live
    log_watch.check()
    await logs.close()

    # Usage and the debit.
    await page.click("nav.sections >> text=Usage")
    await expect(page.locator("main")).to_contain_text("Shop helper")
    await page.click("nav.sections >> text=Billing")
    await expect(page.locator("#transactions-table")).to_contain_text("usage")

    # Buy credits: Stripe's page is the one place the browser leaves for.
    await page.get_by_role("button", name="Buy starter").click()
    await page.wait_for_url(f"{stripe_fake.api_base}/c/pay/**")
    [session] = stripe_fake.sessions.values()
    assert watched.elsewhere == [session["url"]]
    watched.elsewhere.clear()
    async with httpx.AsyncClient(base_url=live_server) as stripe_side:
        for event in stripe_fake.complete_session(session["id"]):
            assert (await deliver(stripe_side, stripe_fake, event)).status_code == 200
    await page.goto(f"{live_server}/billing")
    await expect(page.locator("#transactions-table")).to_contain_text("+500")

    # A key: shown once, then revoked.
    await page.click("nav.sections >> text=API keys")
    await page.fill("input[name=name]", "my laptop")
    await page.check("input[name=scopes][value='agents:read']")
    await page.click("text=Create key")
    key = await page.locator("#new-key").input_value()
    assert key.startswith("lg_live_") and len(key) > 40
    await page.goto(f"{live_server}/keys")
    await expect(page.locator("main")).to_contain_text("my laptop")
    assert key not in await page.content()  # shown once, never again
    await page.click("main >> text=Revoke")
    await page.get_by_role("button", name="Revoke the key").click()
    await expect(page.locator("main")).not_to_contain_text("my laptop")

    assert await fits(page, 360)
    # Sign out: the dashboard is closed again.
    await page.click("header >> text=Sign out")
    await page.goto(f"{live_server}/home")
    await expect(page).to_have_url(f"{live_server}/login?next=/home")
    watched.check()
    cookies = {cookie["name"] for cookie in await page.context.cookies()}
    assert cookies <= {"lg_session", "lg_csrf"}


async def test_the_start_of_it_with_the_keyboard_alone(
    browser: Browser, live_server: str, settings: Settings, openrouter: FakeOpenRouter
) -> None:
    page = await browser.new_page()
    watched = watch(page, live_server)
    await _registered(page, live_server, settings, "keys.only@example.com")
    await page.goto(f"{live_server}/login")
    email = page.locator('form[action="/api/v1/auth/login"] input[name=email]')
    await _tab_to(page, email, 20)
    await expect(email).to_be_focused()
    await page.keyboard.type("keys.only@example.com")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{live_server}/home")

    # From the skip link to the first step's link, by Tab only.
    await page.keyboard.press("Tab")
    await expect(page.locator(".skip")).to_be_focused()
    await page.keyboard.press("Enter")
    create = page.locator("section.steps a", has_text="Create an agent")
    await _tab_to(page, create.first, 30)
    await expect(create.first).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("h1")).to_contain_text("agent")

    name = page.locator("input[name=name]")
    await _tab_to(page, name, 30)
    await page.keyboard.type("Keyboard helper")
    model = page.locator("select[name=model]")
    await _tab_to(page, model, 10)
    await expect(model).to_be_focused()
    await model.select_option(MODEL)  # a select takes arrow keys; choosing by value is the same
    submit = page.locator("button[type=submit]", has_text="Create agent")
    await _tab_to(page, submit, 80)
    await expect(submit).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("h1")).to_have_text("Keyboard helper")

    deploy = page.locator("button", has_text="Deploy")
    await _tab_to(page, deploy, 40)
    await expect(deploy).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#agent-status")).to_have_text("running")

    openrouter.reply("Typed, and answered")
    playground = page.locator("nav.agent-tabs a", has_text="Playground")
    await _tab_to(page, playground, 40)
    await page.keyboard.press("Enter")
    message = page.get_by_label("Message")
    await _tab_to(page, message, 40)
    await page.keyboard.type("Hello")
    await page.keyboard.press("Enter")
    await expect(page.locator(".msg-assistant .text").last).to_have_text(
        "Typed, and answered", timeout=20_000
    )
    watched.check()
