"""The signed-in layout and the home page: the sign-in redirect that comes back, the figures a
person sees first, and the same page in a real browser (no CSP violation, nothing fetched from
another origin, usable at 360 px, in dark mode)."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, expect

from lunogen.kit.ids import new_id
from lunogen.notification.models import Notification
from tests.agent.support import create_agent, new_dev
from tests.dashboard.browser import fits, sign_in
from tests.helpers import Api


async def test_signed_out_pages_send_to_sign_in_and_back(api: Api) -> None:
    browser = api.new_client()
    away = await browser.get("/home")
    assert away.status_code == 303 and away.headers["location"] == "/login?next=/home"
    login = await browser.get("/login?next=/home")
    assert 'name="next" value="/home"' in login.text
    # Only paths of this site are carried through.
    for elsewhere in ("//evil.example/x", "https://evil.example", "/\\\\evil.example"):
        assert 'name="next"' not in (await browser.get(f"/login?next={elsewhere}")).text


async def test_signing_in_goes_where_the_person_was_going(api: Api) -> None:
    person = await api.sign_up()
    browser = api.new_client()
    page = await browser.get("/login")
    csrf = browser.cookies["lg_csrf"]
    form = {"email": person.email, "password": person.password, "csrf_token": csrf}
    signed = await browser.post("/api/v1/auth/login", data={**form, "next": "/usage"})
    assert signed.status_code == 303 and signed.headers["location"] == "/usage", page.text
    other = api.new_client()
    await other.get("/login")
    form["csrf_token"] = other.cookies["lg_csrf"]
    refused = await other.post("/api/v1/auth/login", data={**form, "next": "//evil.example/"})
    assert refused.status_code == 422, refused.text
    assert "must be a path on this site" in refused.text
    assert "location" not in refused.headers


async def test_home_shows_the_first_steps_then_the_agents(api: Api) -> None:
    dev = await new_dev(api)
    home = await dev.person.client.get("/home")
    assert home.status_code == 200
    assert "Your first agent, in three steps" in home.text
    assert 'href="/agents/new"' in home.text
    assert "Notifications" in home.text and 'aria-current="page"' in home.text
    agent = await create_agent(dev, name="Shop helper")
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    home = await dev.person.client.get("/home")
    assert "Your first agent" not in home.text
    assert "Shop helper" in home.text and "status-running" in home.text
    assert "1 running" in home.text


async def test_the_unread_count_is_in_the_header(api: Api) -> None:
    dev = await new_dev(api)
    async with api.app.state.sessionmaker() as session:
        session.add(
            Notification(
                id=new_id(),
                user_id=dev.id,
                kind="agent.error",
                title="Agent Shop helper stopped working",
                body="Its model is gone.",
                dedupe_key="test:1",
            )
        )
        await session.commit()
    home = await dev.person.client.get("/home")
    assert '<span class="badge" aria-label="1 unread">1</span>' in home.text


async def test_home_in_a_real_browser(browser: Browser, live_server: str, api: Api) -> None:
    person = await api.sign_up()
    watched = await sign_in(browser, live_server, person)
    page = watched.page
    await expect(page.locator("h1")).to_contain_text("Welcome")
    await expect(page.locator("nav.sections a[aria-current=page]")).to_have_text("Home")
    assert await fits(page, 360)
    await page.emulate_media(color_scheme="dark")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 21, 27)"
    # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    await page.keyboard.press("Tab")
    await expect(page.locator(".skip")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#main")).to_be_focused()
    watched.check()
    cookies = {c["name"] for c in await page.context.cookies()}
    assert cookies == {"lg_session", "lg_csrf"}


async def test_an_error_page_is_a_page(api: Api, client: httpx.AsyncClient) -> None:
    person = await api.sign_up()
    missing = await person.client.get("/agents/00000000-0000-0000-0000-000000000000/nothing")
    assert missing.status_code == 404
