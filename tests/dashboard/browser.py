"""Dashboard tests in a real browser: Debian's Chromium driven by Playwright, a signed-in page,
and the checks every page must pass (no CSP violation, no request off the origin, fits 360 px).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, async_playwright, expect

from tests.helpers import Api, Signed

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is required for browser tests: apt-get install chromium")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        await instance.close()


@dataclass
class Watched:
    """What a page did that it must not: CSP violations, requests to another origin."""

    page: Page
    origin: str
    violations: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert self.violations == [], self.violations
        assert self.elsewhere == [], self.elsewhere


def watch(page: Page, origin: str) -> Watched:
    watched = Watched(page, origin)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            watched.violations.append(message.text)

    def on_request(request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https") and f"{parts.scheme}://{parts.netloc}" != origin:
            watched.elsewhere.append(request.url)

    page.on("console", on_console)
    page.on("request", on_request)
    return watched


async def sign_in(browser: Browser, live_server: str, person: Signed) -> Watched:
    """A new browser page signed in as `person`, on their home page, watched."""
    page = await browser.new_page()
    watched = watch(page, live_server)
    await page.goto(f"{live_server}/login")
    await page.fill("input[name=email]", person.email)
    await page.fill("input[name=password]", person.password)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{live_server}/home")
    return watched


async def fits(page: Page, width: int = 360) -> bool:
    """Whether the page shows without horizontal scrolling at `width` CSS pixels."""
    await page.set_viewport_size({"width": width, "height": 800})
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    return int(scroll) <= width


async def signed_up(api: Api) -> Signed:
    return await api.sign_up()
