"""The plain sign-up pages in a real browser: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import Browser, Page, expect
from sqlalchemy import select

from lunogen.config import Settings
from lunogen.db import create_engine, create_sessionmaker
from lunogen.kit.crypto import load_keyring
from lunogen.notification.models import OutboundEmail


async def _emailed_token(settings: Settings, to: str) -> str:
    engine = create_engine(settings.effective_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            query = (
                select(OutboundEmail)
                .where(OutboundEmail.to_address == to)
                .order_by(OutboundEmail.created_at.desc())
            )
            email = (await session.execute(query)).scalars().first()
    finally:
        await engine.dispose()
    assert email is not None, f"no email to {to}"
    body = load_keyring(settings.secret_keys, settings.data_dir).decrypt(email.body_encrypted)
    match = re.search(r"/verify\?token=([A-Za-z0-9_\-]+)", body)
    assert match, body
    return match.group(1)


async def _register(page: Page, base: str, email: str, *, consent: bool = True) -> None:
    await page.goto(f"{base}/register")
    await page.fill("input[name=name]", "Browser Person")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", "a long browser password")
    if consent:
        for name in ("age_confirmed", "accept_terms", "accept_privacy"):
            await page.check(f"input[name={name}]")
    await page.click("button[type=submit]")


async def test_register_verify_sign_in_sign_out(
    browser: Browser, live_server: str, settings: Settings, tmp_path: Path
) -> None:
    page = await browser.new_page()
    email = "web.person@example.com"
    await _register(page, live_server, email)
    await expect(page.locator("h1")).to_have_text("Check your inbox")

    token = await _emailed_token(settings, email)
    await page.goto(f"{live_server}/verify?token={token}")
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Email verified")

    await page.goto(f"{live_server}/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", "a long browser password")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{live_server}/home")
    await expect(page.locator("h1")).to_have_text("Welcome, Browser Person")
    await expect(page.locator("main")).to_contain_text("Create an agent")
    await page.screenshot(path=str(tmp_path / "home.png"))
    await page.goto(f"{live_server}/account")
    await expect(page).to_have_url(f"{live_server}/settings")
    await expect(page.locator("main")).to_contain_text(email)

    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert set(cookies) == {"lg_session", "lg_csrf"}
    assert cookies["lg_session"]["httpOnly"] is True
    assert cookies["lg_session"]["sameSite"] == "Lax"

    await page.click("text=Sign out everywhere")
    await expect(page).to_have_url(f"{live_server}/login")
    await page.goto(f"{live_server}/settings")
    await expect(page).to_have_url(f"{live_server}/login?next=/settings")


async def test_register_without_consent_shows_the_error(browser: Browser, live_server: str) -> None:
    page = await browser.new_page()
    await _register(page, live_server, "noconsent@example.com", consent=False)
    await expect(page.locator(".error")).to_contain_text("18 or older")
    await expect(page.locator("input[name=email]")).to_be_visible()


async def test_wrong_password_in_the_browser(browser: Browser, live_server: str) -> None:
    page = await browser.new_page()
    await page.goto(f"{live_server}/login")
    await page.fill("input[name=email]", "nobody@example.com")
    await page.fill("input[name=password]", "not the password")
    await page.click("button[type=submit]")
    await expect(page.locator(".error")).to_have_text("Wrong email or password")
