"""The web chat widget in a real browser (Debian's Chromium, driven by Playwright).

LunoGen runs over real HTTP on 127.0.0.1 (`live_server`); the site that embeds the widget is a
second origin, a tiny page served on 127.0.0.2 (and, for the refused case, on another port).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    Request,
    async_playwright,
    expect,
)
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import HTMLResponse
from starlette.routing import Route

from lunogen.channel.webchat import endpoints as webchat
from tests.agent import conftest as agent_fixtures
from tests.dashboard.browser import CHROMIUM, CHROMIUM_ARGS
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.server import loopback_socket, serve_in_thread

# On the live server: a verified Pro developer's key client and a draft agent id.
api_for_live = agent_fixtures.api_for_live

HOST_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>A shop</title></head>
<body>
<h1>A shop that embeds the chat</h1>
<p>Nothing here can be focused before the chat launcher.</p>
<script src="{lunogen}/chat/widget.js" data-channel="{channel}" async></script>
</body>
</html>
"""


@dataclass
class Site:
    """A web page on an origin of its own that embeds the widget."""

    origin: str
    page_html: str = ""

    def app(self) -> Starlette:
        async def page(request: StarletteRequest) -> HTMLResponse:
            return HTMLResponse(self.page_html)

        return Starlette(routes=[Route("/", page)])


@pytest.fixture
def shop() -> Iterator[Site]:
    sock, port = loopback_socket("127.0.0.2")
    site = Site(origin=f"http://127.0.0.2:{port}")
    with serve_in_thread(site.app(), sock, name="shop"):
        yield site


@pytest.fixture
def stranger() -> Iterator[Site]:
    sock, port = loopback_socket("127.0.0.2")
    site = Site(origin=f"http://127.0.0.2:{port}")
    with serve_in_thread(site.app(), sock, name="stranger"):
        yield site


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is required for browser tests: apt-get install chromium")
    async with async_playwright() as driver:
        yield driver


@pytest.fixture
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    """Fresh contexts, like private windows: no storage in third-party frames."""
    instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield instance
    await instance.close()


@pytest.fixture
async def profile(playwright: Playwright, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A browser profile on disk with Chrome's ordinary default (third-party cookies and site
    data allowed): a framed page keeps its storage, partitioned by the site that frames it.
    Private windows and stricter settings refuse it (`browser`)."""
    directory = tmp_path / "profile" / "Default"
    directory.mkdir(parents=True)
    (directory / "Preferences").write_text(
        '{"profile": {"cookie_controls_mode": 0, "block_third_party_cookies": false}}'
    )
    context = await playwright.chromium.launch_persistent_context(
        tmp_path / "profile", executable_path=CHROMIUM, args=CHROMIUM_ARGS
    )
    yield context
    await context.close()


async def _webchat(client: httpx.AsyncClient, agent_id: str, origins: list[str]) -> str:
    """Give the agent a web chat allowing `origins`, deploy it, and return the channel id."""
    channel = {
        "type": "webchat",
        "allowed_origins": origins,
        "title": "Shop help",
        "greeting": "Hello! How can we help?",
    }
    patched = await client.patch(f"/api/v1/agents/{agent_id}", json={"channels": [channel]})
    assert patched.status_code == 200, patched.text
    deployed = await client.post(f"/api/v1/agents/{agent_id}/deploy")
    assert deployed.status_code == 200, deployed.text
    return str(patched.json()["channels"][0]["id"])


def _record(page: Page) -> list[Request]:
    seen: list[Request] = []

    def record(request: Request) -> None:
        seen.append(request)

    page.on("request", record)
    return seen


def _origins(requests: list[Request]) -> set[str]:
    return {f"{urlsplit(r.url).scheme}://{urlsplit(r.url).netloc}" for r in requests}


async def _watch_reply_text(page: Page) -> None:
    """Record, in the chat frame, every text the newest reply bubble shows as it is written."""
    frame = page.frame_locator("iframe[title=Chat]")
    await frame.locator("#chat-log").evaluate(
        """log => {
            window.seenTexts = [];
            new MutationObserver(records => {
                for (const record of records) {
                    // The target, not the node's parent: a text replaced since is detached.
                    if (!record.target.closest?.('.msg.agent')) continue;
                    for (const node of record.addedNodes) {
                        if (node.nodeType === Node.TEXT_NODE) window.seenTexts.push(node.data);
                    }
                }
            }).observe(log, {childList: true, subtree: true});
        }"""
    )


async def _seen_texts(page: Page) -> list[str]:
    frame = page.frame_locator("iframe[title=Chat]")
    texts: list[str] = await frame.locator("#chat-log").evaluate("() => window.seenTexts")
    return texts


async def test_a_visitor_chats_through_the_widget_on_another_site(
    profile: BrowserContext,
    live_server: str,
    api_for_live: tuple[httpx.AsyncClient, str],
    openrouter: FakeOpenRouter,
    shop: Site,
    tmp_path: Path,
) -> None:
    client, agent_id = api_for_live
    channel_id = await _webchat(client, agent_id, [shop.origin])
    shop.page_html = HOST_PAGE.format(lunogen=live_server, channel=channel_id)
    context = profile
    page = await context.new_page()
    requests = _record(page)
    await page.goto(shop.origin + "/")

    launcher = page.get_by_role("button", name="Open the chat")
    await expect(launcher).to_be_visible()
    assert _origins(requests) == {shop.origin, live_server}  # the page and the widget script
    await launcher.click()
    frame = page.frame_locator("iframe[title=Chat]")
    await expect(frame.locator("h1")).to_have_text("Shop help")
    await expect(frame.locator(".greeting")).to_contain_text("Hello! How can we help?")
    await expect(frame.get_by_role("link", name="Powered by LunoGen")).to_be_visible()
    await expect(page.get_by_role("button", name="Close the chat")).to_have_attribute(
        "aria-expanded", "true"
    )

    openrouter.reply("We ship to every country on Earth")
    await _watch_reply_text(page)
    message = frame.get_by_label("Your message")
    await message.fill("Do you ship abroad?")
    await message.press("Enter")
    reply = frame.locator(".msg.agent").last
    await expect(reply).to_contain_text("We ship to every country on Earth")
    await expect(reply).not_to_have_class("writing")
    await expect(frame.locator("#chat-announce")).to_contain_text(
        "We ship to every country on Earth"
    )
    await expect(frame.locator(".msg.visitor")).to_have_text(["You: Do you ship abroad?"])
    await expect(message).to_have_value("")
    # Written piece by piece as the deltas arrived, not in one go at the end.
    seen = await _seen_texts(page)
    assert seen[0] == "We " and seen[-1] == "We ship to every country on Earth", seen
    assert len(seen) >= 7, seen
    await page.screenshot(path=str(tmp_path / "widget.png"))

    # Every request went to the shop or to LunoGen, and nothing set a cookie anywhere.
    assert _origins(requests) == {shop.origin, live_server}
    paths = [urlsplit(r.url).path for r in requests if r.url.startswith(live_server)]
    assert f"/chat/{channel_id}/session" in paths and f"/chat/{channel_id}/messages" in paths
    assert await context.cookies() == []
    shop_storage = await page.evaluate("() => window.localStorage.length")
    assert shop_storage == 0  # the visitor id lives in the frame, on LunoGen's origin

    # A reload shows the conversation again (the same visitor id, from the frame's storage).
    await page.reload()
    await page.get_by_role("button", name="Open the chat").click()
    await expect(frame.locator(".msg.visitor")).to_have_text(["You: Do you ship abroad?"])
    await expect(frame.locator(".msg.agent").last).to_contain_text(
        "We ship to every country on Earth"
    )
    assert _origins(requests) == {shop.origin, live_server}
    visitor_ids = [r.post_data for r in requests if r.url.endswith("/session")]
    assert len(visitor_ids) == 2 and visitor_ids[0] == visitor_ids[1], visitor_ids


async def test_without_storage_in_the_frame_the_chat_lasts_the_page_view(
    browser: Browser,
    live_server: str,
    api_for_live: tuple[httpx.AsyncClient, str],
    openrouter: FakeOpenRouter,
    shop: Site,
) -> None:
    client, agent_id = api_for_live
    channel_id = await _webchat(client, agent_id, [shop.origin])
    shop.page_html = HOST_PAGE.format(lunogen=live_server, channel=channel_id)
    page = await browser.new_page()  # a private window: third-party frames get no storage
    await page.goto(shop.origin + "/")
    await page.get_by_role("button", name="Open the chat").click()
    frame = page.frame_locator("iframe[title=Chat]")
    openrouter.reply("Still works")
    await frame.get_by_label("Your message").fill("Hello")
    await frame.get_by_label("Your message").press("Enter")
    await expect(frame.locator(".msg.agent").last).to_contain_text("Still works")
    await expect(frame.get_by_role("status")).to_be_hidden()  # no error shown
    assert await page.evaluate("() => window.localStorage.length") == 0


async def test_keyboard_only_use(
    browser: Browser,
    live_server: str,
    api_for_live: tuple[httpx.AsyncClient, str],
    openrouter: FakeOpenRouter,
    shop: Site,
) -> None:
    client, agent_id = api_for_live
    channel_id = await _webchat(client, agent_id, [shop.origin])
    shop.page_html = HOST_PAGE.format(lunogen=live_server, channel=channel_id)
    page = await browser.new_page()
    await page.goto(shop.origin + "/")
    launcher = page.get_by_role("button", name="Open the chat")
    await expect(launcher).to_be_visible()

    await page.keyboard.press("Tab")
    await expect(launcher).to_be_focused()
    await page.keyboard.press("Enter")
    frame = page.frame_locator("iframe[title=Chat]")
    message = frame.get_by_label("Your message")
    await expect(message).to_be_focused()
    openrouter.reply("Typed replies work")
    await page.keyboard.type("Hello from the keyboard")
    await page.keyboard.press("Enter")
    await expect(frame.locator(".msg.agent").last).to_contain_text("Typed replies work")
    await expect(frame.locator(".msg.visitor")).to_have_text(["You: Hello from the keyboard"])
    await expect(message).to_be_focused()
    # Shift+Enter is a new line, not a send.
    await page.keyboard.type("line one")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("line two")
    await expect(message).to_have_value("line one\nline two")
    await expect(frame.locator(".msg.visitor")).to_have_count(1)
    # Escape closes the chat and gives the focus back to the launcher.
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("button", name="Open the chat")).to_be_focused()
    await expect(page.locator("iframe[title=Chat]")).to_be_hidden()


async def test_a_site_not_in_the_allowlist_gets_no_chat(
    browser: Browser,
    live_server: str,
    api_for_live: tuple[httpx.AsyncClient, str],
    shop: Site,
    stranger: Site,
) -> None:
    client, agent_id = api_for_live
    channel_id = await _webchat(client, agent_id, [shop.origin])
    stranger.page_html = HOST_PAGE.format(lunogen=live_server, channel=channel_id)
    page = await browser.new_page()
    requests = _record(page)
    refused_frames: list[str] = []
    page.on(
        "console",
        lambda m: refused_frames.append(m.text) if "frame-ancestors" in m.text else None,
    )
    await page.goto(stranger.origin + "/")
    await page.get_by_role("button", name="Open the chat").click()

    # What the visitor sees: a notice instead of the chat, and no chat input anywhere.
    await expect(page.get_by_role("alert")).to_have_text("This chat is not available on this site.")
    await expect(page.locator("iframe[title=Chat]")).to_be_hidden()
    for frame in page.frames:
        assert await frame.locator("#chat-input").count() == 0, frame.url
    assert refused_frames, "Chromium did not report the frame-ancestors refusal"
    # The chat page never ran: no session was asked for, nothing went elsewhere.
    paths = [urlsplit(r.url).path for r in requests]
    assert f"/chat/{channel_id}/session" not in paths
    assert f"/chat/{channel_id}" in paths  # it was asked for, and refused by the browser
    assert _origins(requests) <= {stranger.origin, live_server}


async def test_the_hosted_page_at_360_px_in_the_dark(
    browser: Browser,
    live_server: str,
    api_for_live: tuple[httpx.AsyncClient, str],
    openrouter: FakeOpenRouter,
    tmp_path: Path,
) -> None:
    client, agent_id = api_for_live
    channel_id = await _webchat(client, agent_id, [])
    context = await browser.new_context(viewport={"width": 360, "height": 640}, color_scheme="dark")
    page = await context.new_page()
    requests = _record(page)
    await page.goto(f"{live_server}/chat/{channel_id}")
    message = page.get_by_label("Your message")
    await expect(message).to_be_focused()  # the hosted page starts in the input
    send = page.get_by_role("button", name="Send")
    for part in (message, send, page.get_by_role("link", name="Powered by LunoGen")):
        await expect(part).to_be_in_viewport()
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360
    background = await page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 19, 25)"  # the dark palette
    openrouter.reply("A narrow screen is fine")
    await message.fill("Does this fit?")
    await send.click()
    await expect(page.locator(".msg.agent").last).to_contain_text("A narrow screen is fine")
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360
    await page.screenshot(path=str(tmp_path / "narrow-dark.png"))
    assert _origins(requests) == {live_server}
    assert await context.cookies() == []
    await context.close()


async def test_the_chat_says_when_the_agent_is_offline(
    browser: Browser, live_server: str, api_for_live: tuple[httpx.AsyncClient, str]
) -> None:
    client, agent_id = api_for_live
    channel_id = await _webchat(client, agent_id, [])
    assert (await client.post(f"/api/v1/agents/{agent_id}/stop")).status_code == 200
    page = await browser.new_page()
    await page.goto(f"{live_server}/chat/{channel_id}")
    await expect(page.get_by_role("status")).to_contain_text("This chat is offline right now")


async def test_a_visitor_over_the_limit_is_told_when_to_retry(
    browser: Browser,
    live_server: str,
    api_for_live: tuple[httpx.AsyncClient, str],
    openrouter: FakeOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webchat, "LIMITS", webchat.WebchatLimits(messages_per_visitor=1))
    client, agent_id = api_for_live
    channel_id = await _webchat(client, agent_id, [])
    page = await browser.new_page()
    await page.goto(f"{live_server}/chat/{channel_id}")
    message = page.get_by_label("Your message")
    openrouter.reply("First answer")
    await message.fill("One")
    await message.press("Enter")
    await expect(page.locator(".msg.agent").last).to_contain_text("First answer")
    # The stream is over (until then a second message waits for the reply).
    await expect(page.get_by_role("button", name="Send")).to_have_attribute(
        "aria-disabled", "false"
    )
    await message.fill("Two")
    await message.press("Enter")
    status = page.get_by_role("status")
    await expect(status).to_contain_text("You are sending messages too fast")
    await expect(status).to_contain_text(re.compile(r"retry in \d+ s"))
    await expect(page.locator(".msg.visitor.failed")).to_have_count(1)
