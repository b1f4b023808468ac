"""Conversations in the dashboard (and the API's DELETE of a thread): threads per contact, the
messages, the agent's notes about the contact, each deletable; never another tenant's."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, expect

from tests.agent.support import Dev, create_agent, new_dev
from tests.dashboard.browser import fits, sign_in
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api


async def _talked(api: Api, openrouter: FakeOpenRouter) -> tuple[Dev, dict[str, Any], str]:
    dev = await new_dev(api)
    agent = await create_agent(dev, name="Shop helper", tools=["remember"])
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    openrouter.call_tool("remember", {"note": "Ada rides a teal bike"})
    openrouter.reply("Noted, Ada.")
    said = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages", json={"text": "I ride teal", "contact": "ada"}
    )
    assert said.status_code == 200, said.text
    return dev, agent, said.json()["message"]["thread_id"]


async def test_threads_messages_and_notes_are_shown_and_deletable(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent, thread_id = await _talked(api, openrouter)
    browser = dev.person.client
    listed = await browser.get(f"/agents/{agent['id']}/conversations")
    assert listed.status_code == 200
    assert f"/agents/{agent['id']}/conversations/{thread_id}" in listed.text
    assert ">ada<" in listed.text and "api" in listed.text
    shown = await browser.get(f"/agents/{agent['id']}/conversations/{thread_id}")
    assert "I ride teal" in shown.text and "Noted, Ada." in shown.text
    assert "Ada rides a teal bike" in shown.text
    notes = (await dev.http.get(f"/api/v1/agents/{agent['id']}/memory")).json()["data"]
    [note] = notes
    csrf = dev.person.csrf
    gone = await browser.post(
        f"/agents/{agent['id']}/memory/{note['id']}/delete",
        data={"csrf_token": csrf, "back": thread_id},
    )
    assert gone.status_code == 303
    assert gone.headers["location"] == f"/agents/{agent['id']}/conversations/{thread_id}"
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/memory")).json()["data"] == []
    deleted = await browser.post(
        f"/agents/{agent['id']}/conversations/{thread_id}/delete", data={"csrf_token": csrf}
    )
    assert deleted.status_code == 303
    threads = (await dev.http.get(f"/api/v1/agents/{agent['id']}/threads")).json()
    assert threads["total"] == 0
    audit = (await dev.http.get("/api/v1/audit", params={"limit": 50})).json()["data"]
    actions = {event["action"] for event in audit}
    assert {"agent.thread_deleted", "agent.memory_note_deleted"} <= actions


async def test_a_form_without_its_csrf_field_changes_nothing(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent, thread_id = await _talked(api, openrouter)
    refused = await dev.person.client.post(
        f"/agents/{agent['id']}/conversations/{thread_id}/delete", data={}
    )
    assert refused.status_code == 403
    threads = (await dev.http.get(f"/api/v1/agents/{agent['id']}/threads")).json()
    assert threads["total"] == 1


async def test_another_tenants_conversations_are_the_404_page(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent, thread_id = await _talked(api, openrouter)
    stranger = await new_dev(api)
    for path in (
        f"/agents/{agent['id']}/conversations",
        f"/agents/{agent['id']}/conversations/{thread_id}",
    ):
        seen = await stranger.person.client.get(path)
        assert seen.status_code == 404 and "Not found" in seen.text
        assert "Shop helper" not in seen.text
    form = {"csrf_token": stranger.person.csrf}
    tried = await stranger.person.client.post(
        f"/agents/{agent['id']}/conversations/{thread_id}/delete", data=form
    )
    assert tried.status_code == 404
    # Someone else's thread under one's own agent is not found either.
    own = await create_agent(stranger)
    assert (
        await stranger.person.client.get(f"/agents/{own['id']}/conversations/{thread_id}")
    ).status_code == 404
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/threads")).json()["total"] == 1


async def test_the_api_deletes_a_thread_but_not_while_it_is_answered(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent, thread_id = await _talked(api, openrouter)
    path = f"/api/v1/agents/{agent['id']}/threads/{thread_id}"
    assert (await dev.http.delete(path)).status_code == 204
    assert (await dev.http.delete(path)).status_code == 404
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/threads")).json()["total"] == 0


async def test_conversations_in_a_real_browser(
    browser: Browser, live_server: str, api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent, _thread = await _talked(api, openrouter)
    watched = await sign_in(browser, live_server, dev.person)
    page = watched.page
    await page.goto(f"{live_server}/agents/{agent['id']}/conversations")
    await page.click("text=ada")
    await expect(page.locator("h1")).to_have_text("ada")
    await expect(page.locator(".messages")).to_contain_text("Noted, Ada.")
    assert await fits(page, 360)
    await page.click("text=Delete this note")
    await expect(page.locator("main")).to_contain_text("No notes about this contact")
    watched.check()


async def test_a_malformed_query_is_an_error_page_not_json(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent, _thread = await _talked(api, openrouter)
    bad = await dev.person.client.get(f"/agents/{agent['id']}/conversations?offset=-1")
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("text/html")
    assert "Invalid request" in bad.text and "offset" in bad.text


async def test_the_owner_takes_over_replies_and_hands_back_from_the_thread_page(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent, thread_id = await _talked(api, openrouter)
    browser, csrf = dev.person.client, dev.person.csrf
    page_path = f"/agents/{agent['id']}/conversations/{thread_id}"
    shown = await browser.get(page_path)
    assert "Take over" in shown.text and "Shop helper answers ada" in shown.text
    taken = await browser.post(f"{page_path}/take-over", data={"csrf_token": csrf, "minutes": "20"})
    assert taken.status_code == 303 and taken.headers["location"].endswith("outcome=taken")
    said = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages",
        json={"text": "Anyone there?", "contact": "ada", "wait_seconds": 0.2},
    )
    assert said.json()["status"] == "pending"
    bad = await browser.post(f"{page_path}/reply", data={"csrf_token": csrf, "text": "a\x00b"})
    assert bad.status_code == 422
    sent = await browser.post(
        f"{page_path}/reply", data={"csrf_token": csrf, "text": "Yes, Sam here."}
    )
    assert sent.status_code == 303 and sent.headers["location"].endswith("outcome=sent")
    after = await browser.get(f"{page_path}?outcome=sent")
    assert "Yes, Sam here." in after.text and "You answer ada until" in after.text
    handed = await browser.post(f"{page_path}/hand-back", data={"csrf_token": csrf})
    assert handed.headers["location"].endswith("outcome=handed")
    other = await new_dev(api)
    refused = await other.person.client.post(
        f"{page_path}/take-over", data={"csrf_token": other.person.csrf, "minutes": "5"}
    )
    assert refused.status_code == 404
    assert len(openrouter.chat_requests) == 2  # the first exchange's only: no turn since
