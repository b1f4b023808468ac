"""The Usage and Billing pages in real Chromium: the charts drawn and scaled to 360 px, light
and dark, the range form and the forms used with the keyboard, the CSV downloaded, and buying
credits leaving for the fake Stripe's checkout page (the one request allowed off the origin)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.agent.support import create_agent, new_dev
from tests.billing.stripe_support import billing_settings
from tests.dashboard.browser import fits, sign_in
from tests.dashboard.test_usage_billing import DAY1, _insert
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.fakes.stripe import (  # noqa: F401 (fixtures)
    FakeStripe,
    stripe_fake,
    stripe_server,
)
from tests.helpers import Api

DARK_INK = "rgb(230, 233, 238)"
DARK_ACCENT = "rgb(141, 162, 255)"
DARK_BG = "rgb(18, 21, 27)"


@pytest.fixture
def settings_overrides(
    openrouter: FakeOpenRouter,
    stripe_fake: FakeStripe,  # noqa: F811
) -> dict[str, object]:
    return {**openrouter_settings(openrouter), **billing_settings(stripe_fake)}


async def _style(page: Page, selector: str, prop: str) -> str:
    value = await page.locator(selector).first.evaluate(
        "(el, prop) => getComputedStyle(el)[prop]", prop
    )
    return str(value)


async def test_usage_in_a_real_browser(browser: Browser, live_server: str, api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, name="Shop helper")
    await _insert(
        api,
        dev.id,
        [
            {"agent_id": agent["id"], "created_at": DAY1, "prompt_tokens": 1000,
             "completion_tokens": 200, "cost_nano_usd": 1_500_000},
        ],
    )  # fmt: skip
    watched = await sign_in(browser, live_server, dev.person)
    page = watched.page
    await page.click("nav.sections >> text=Usage")
    await expect(page.locator("h1")).to_have_text("Usage")
    await expect(page.locator("text=No model calls from")).to_be_visible()  # none in 30 days

    # The range with the keyboard: the dates, then Enter in the field submits the form.
    await page.fill("input[name=since]", "2026-03-01")
    await page.fill("input[name=until]", "2026-03-07")
    await page.focus("input[name=until]")
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{live_server}/usage?since=2026-03-01&until=2026-03-07")
    charts = page.locator("svg.chart[role=img]")
    await expect(charts).to_have_count(6)
    await expect(page.locator("#tokens-agent-t")).to_have_text(
        "Tokens by agent, 2026-03-01 to 2026-03-07 (prompt + completion)"
    )
    await expect(page.locator("#group-agent ~ .charts svg.chart-h text.value").first).to_have_text(
        "1,200"
    )
    await expect(page.locator("#table-agent tbody th")).to_have_text(["Shop helper"])
    await expect(page.locator("#table-agent tbody td")).to_have_text(
        ["1", "0", "1,000", "200", "$0.0015"]
    )

    # 360 px: nothing scrolls sideways and each chart shrinks to its column.
    assert await fits(page, 360)
    for i in range(6):
        box = await charts.nth(i).bounding_box()
        assert box is not None and 200 < box["width"] <= 360 and box["height"] > 50
    # Dark: the chart's text and bars follow the theme, not black on dark grey.
    await page.emulate_media(color_scheme="dark")
    assert await _style(page, "body", "backgroundColor") == DARK_BG
    assert await _style(page, "svg.chart text.label", "fill") == DARK_INK
    assert await _style(page, "svg.chart rect.bar", "fill") == DARK_ACCENT

    # The CSV of a grouping downloads with the page's figures.
    async with page.expect_download() as info:
        await page.click("a[href*='group_by=agent']")
    download = await info.value
    saved = await download.path()
    rows = list(csv.DictReader(io.StringIO(Path(saved).read_text())))
    assert [(r["name"], r["prompt_tokens"], r["cost_usd"]) for r in rows] == [
        ("Shop helper", "1000", "0.001500000"),
        ("", "1000", "0.001500000"),
    ]

    # A bad range is announced on the page.
    await page.goto(f"{live_server}/usage?since=2026-03-07&until=2026-03-01")
    await expect(page.locator("[role=alert]")).to_have_text(
        "until: the last day must be on or after the first day"
    )
    watched.check()


async def test_billing_in_a_real_browser(
    browser: Browser,
    live_server: str,
    api: Api,
    stripe_fake: FakeStripe,  # noqa: F811
) -> None:
    person = await api.sign_up()
    watched = await sign_in(browser, live_server, person)
    page = watched.page
    await page.click("nav.sections >> text=Billing")
    await expect(page.locator("h1")).to_have_text("Billing")
    await expect(page.locator("#available")).to_have_text("100 credits")  # the starter grant
    await expect(page.locator("#transactions-table tbody tr")).to_have_count(1)
    assert await fits(page, 360)
    await page.emulate_media(color_scheme="dark")
    assert await _style(page, "body", "backgroundColor") == DARK_BG
    assert await _style(page, "#transactions-table td", "color") == DARK_INK

    # The alert threshold with the keyboard: type, Enter; the page says it is saved.
    field = page.locator("input[name=low_credit_threshold]")
    await field.fill("25")
    await field.press("Enter")
    await expect(page.locator(".flash[role=status]")).to_have_text("Low-credit alert saved.")
    await expect(field).to_have_value("25")
    # A refused amount is announced, and nothing leaves for Stripe.
    await page.fill("input[name=credits]", "9")
    await page.evaluate("document.querySelector('input[name=credits]').removeAttribute('min')")
    await page.press("input[name=credits]", "Enter")
    await expect(page.locator("[role=alert]")).to_contain_text("between 500 and 100000 credits")
    assert stripe_fake.api_requests == []
    watched.check()

    # Buying a pack: the checkout page sends the browser on to Stripe's hosted page (here the
    # fake's), the one navigation off this origin. (A 303 from the form's POST would be
    # refused by the CSP's form-action 'self'.)
    await page.get_by_role("button", name="Buy starter").click()
    await page.wait_for_url(f"{stripe_fake.api_base}/c/pay/**")
    [session] = stripe_fake.sessions.values()
    assert page.url == session["url"]
    assert session["metadata"]["credits"] == "500"
    assert session["success_url"].startswith(f"{live_server}/billing?checkout=success")
    assert watched.elsewhere == [session["url"]]
    watched.elsewhere.clear()
    # Back from Stripe's page is the billing page again: the instant refresh replaced the
    # checkout page in the history, so nothing sends the person off again or re-posts.
    await page.go_back()
    await expect(page.locator("h1")).to_have_text("Billing")
    await page.wait_for_timeout(300)
    await expect(page.locator("h1")).to_have_text("Billing")
    assert len(stripe_fake.sessions) == 1
    watched.check()
