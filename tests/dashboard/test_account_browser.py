"""API keys, notifications, the security log and settings in a real browser (Debian's Chromium):
create a key with the keyboard, copy it from the page that shows it once, revoke it, mark
notifications read and watch the header's count, and every page at 360 px with no CSP violation
and no request off the origin."""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.async_api import Browser, expect

from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.notification.models import Notification
from tests.dashboard.browser import fits, sign_in
from tests.helpers import Api

_KEY = re.compile(r"lg_live_[0-9a-f]{64}")


async def _notes(api: Api, user_id: str, titles: list[str]) -> None:
    async with api.app.state.sessionmaker() as session:
        for number, title in enumerate(titles):
            session.add(
                Notification(
                    id=new_id(),
                    user_id=user_id,
                    kind="agent.error",
                    title=title,
                    body=f"{title}: see the agent's log.",
                    dedupe_key=f"browser:{new_id()}",
                    created_at=utcnow() - timedelta(minutes=10 - number),
                )
            )
        await session.commit()


async def test_keys_and_notifications_in_a_real_browser(
    browser: Browser, live_server: str, api: Api
) -> None:
    person = await api.sign_up()
    await _notes(api, person.id, ["Agent Shop stopped", "Credits are low"])
    watched = await sign_in(browser, live_server, person)
    page = watched.page
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)

    # API keys: the empty state, then a key made with the keyboard alone.
    await page.click("nav.sections >> text=API keys")
    await expect(page).to_have_url(f"{live_server}/keys")
    await expect(page.locator("main")).to_contain_text("No keys yet")
    assert await fits(page, 360)
    await page.focus("input[name=name]")
    await page.keyboard.type("Laptop script")
    await page.keyboard.press("Tab")  # full
    await page.keyboard.press("Tab")  # agents:read
    await expect(page.locator("input[value='agents:read']")).to_be_focused()
    await page.keyboard.press("Space")
    await page.focus("form[action='/keys'] button[type=submit]")
    await page.keyboard.press("Enter")

    await expect(page.locator("h1")).to_have_text("Your new API key")
    await expect(page.locator(".warning")).to_contain_text("shown only on this page")
    shown = await page.locator("#new-key").input_value()
    assert _KEY.fullmatch(shown)
    copy = page.locator("button[data-copy=new-key]")
    await expect(copy).to_be_visible()  # the script un-hides it
    await copy.click()
    await expect(page.locator("[data-copied-for=new-key]")).to_have_text("Copied to the clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == shown
    assert await fits(page, 360)
    await page.set_viewport_size({"width": 1280, "height": 800})

    # Shown once: the list has its prefix only.
    await page.click("text=back to API keys")
    await expect(page.locator("table")).to_contain_text("Laptop script")
    await expect(page.locator("table")).to_contain_text("agents:read")
    assert shown not in await page.content()
    assert await fits(page, 360)
    await page.click("a.button.danger")
    await expect(page.locator("h1")).to_contain_text("Revoke the key")
    await page.click("button.danger")
    await expect(page.locator(".flash")).to_contain_text("Key revoked")
    await expect(page.locator("main")).to_contain_text("No keys yet")
    assert (await api.key_client(shown).get("/api/v1/agents")).status_code == 401

    # Notifications: the header's count follows the marks.
    badge = page.locator(".bell .badge")
    await expect(badge).to_have_text("2")
    await page.click("a.bell")
    await expect(page).to_have_url(f"{live_server}/notifications")
    await expect(page.locator(".note").first).to_contain_text("Credits are low")  # newest first
    assert await fits(page, 360)
    await page.get_by_role("button", name="Credits are low").click()
    await expect(page.locator(".flash")).to_have_text("Marked as read.")
    await expect(badge).to_have_text("1")
    await expect(page.locator(".note.unread")).to_have_count(1)
    await page.click("text=Mark all as read")
    await expect(page.locator(".flash")).to_contain_text("Every notification")
    await expect(badge).to_have_count(0)
    await expect(page.locator(".note.unread")).to_have_count(0)

    # The security log shows what was just done.
    await page.click("nav.sections >> text=Security log")
    await expect(page.locator("table.log")).to_contain_text("API key revoked")
    await expect(page.locator("table.log")).to_contain_text("Signed in")
    assert await fits(page, 360)
    watched.check()


async def test_settings_in_a_real_browser(browser: Browser, live_server: str, api: Api) -> None:
    person = await api.sign_up()
    watched = await sign_in(browser, live_server, person)
    page = watched.page
    await page.click("nav.sections >> text=Settings")
    await expect(page).to_have_url(f"{live_server}/settings")
    await expect(page.locator("main")).to_contain_text(person.email)
    await expect(page.locator("main")).to_contain_text("This browser")
    assert await fits(page, 360)

    await page.get_by_label("Current password").fill("not my password")
    await page.get_by_label("New password").fill("a brand new secret phrase")
    await page.get_by_role("button", name="Change password").click()
    error = page.locator("#password-error")
    await expect(error).to_have_text("Your current password is wrong")
    await expect(error).to_have_attribute("role", "alert")
    await expect(page.get_by_label("Current password")).to_be_visible()
    assert await fits(page, 360)

    await page.get_by_label("Current password").fill(person.password)
    await page.get_by_label("New password").fill("a brand new secret phrase")
    await page.get_by_role("button", name="Change password").click()
    await expect(page.locator(".flash")).to_contain_text("Password changed")
    watched.check()

    await page.get_by_role("button", name="Sign out everywhere").click()
    await expect(page).to_have_url(f"{live_server}/login")
