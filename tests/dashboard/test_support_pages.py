"""The help pages and the support console, used as a browser would: a person opens a ticket,
grants and revokes access, files a privacy request; support answers, assigns, changes status,
reads an account (and its conversations only under a live grant). For a plain user every
console URL, GET or POST, is the 404 page. Then the ticket flow in Chromium."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect
from sqlalchemy import select

from lunogen.admin.models import PrivacyRequest, Ticket
from lunogen.audit.models import AuditEvent
from tests.account.support import rows
from tests.admin.support import conversation, expire_grants, open_ticket, staff
from tests.dashboard.browser import fits, sign_in
from tests.dashboard.test_accessibility import AXE, _violations
from tests.helpers import Api, Signed

NOT_FOUND = "There is nothing here, or it is not yours to see."
_TICKET = re.compile(r"/help/tickets/([0-9a-f-]{36})\?outcome=opened")


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"privacy_contact": "privacy@lunogen.example"}


async def _post(person: Signed, path: str, **fields: str) -> httpx.Response:
    return await person.client.post(path, data={"csrf_token": person.csrf, **fields})


async def test_a_person_opens_a_ticket_answers_and_grants_access(api: Api) -> None:
    person = await api.sign_up()
    shown = await person.client.get("/help")
    assert shown.status_code == 200 and "No tickets yet." in shown.text

    refused = await _post(person, "/help/tickets", subject="", body="It broke")
    assert refused.status_code == 422
    assert 'role="alert">Subject: 1 to 200 characters.' in refused.text
    assert "It broke</textarea>" in refused.text
    assert await rows(api, select(Ticket)) == []

    opened = await _post(person, "/help/tickets", subject="Bot is silent", body="Since noon")
    assert opened.status_code == 303
    match = _TICKET.search(opened.headers["location"])
    assert match
    ticket_id = match.group(1)
    page = await person.client.get(opened.headers["location"])
    assert "Ticket opened" in page.text and "Since noon" in page.text
    assert "Support cannot read your conversations." in page.text

    granted = await _post(person, f"/help/tickets/{ticket_id}/grant", hours="24")
    assert granted.status_code == 303
    page = await person.client.get(f"/help/tickets/{ticket_id}")
    assert "Support may read your agents' conversations until" in page.text
    bad_hours = await _post(person, f"/help/tickets/{ticket_id}/grant", hours="100")
    assert bad_hours.status_code == 422 and "Hours: choose from the list" in bad_hours.text
    revoked = await _post(person, f"/help/tickets/{ticket_id}/revoke")
    assert revoked.headers["location"].endswith("outcome=revoked")
    again = await _post(person, f"/help/tickets/{ticket_id}/revoke")
    assert again.status_code == 404  # nothing to revoke: the page names it

    answered = await _post(person, f"/help/tickets/{ticket_id}/reply", body="More details")
    assert answered.status_code == 303
    assert "More details" in (await person.client.get(f"/help/tickets/{ticket_id}")).text

    stranger = await api.sign_up()
    for path in (f"/help/tickets/{ticket_id}", f"/help/tickets/{'0' * 36}"):
        response = await stranger.client.get(path)
        assert response.status_code == 404 and NOT_FOUND in response.text
    stolen = await _post(stranger, f"/help/tickets/{ticket_id}/reply", body="mine now")
    assert stolen.status_code == 404
    assert "mine now" not in (await person.client.get(f"/help/tickets/{ticket_id}")).text
    assert (await api.new_client().get("/help")).status_code == 303  # signed out: sign in


async def test_the_console_does_not_exist_for_a_plain_user(api: Api) -> None:
    owner = await api.sign_up()
    ticket_id = await open_ticket(owner)
    person = await api.sign_up()
    for path in (
        "/support",
        f"/support/tickets/{ticket_id}",
        "/support/accounts",
        f"/support/accounts/{owner.id}",
        f"/support/accounts/{owner.id}/conversations",
        "/support/privacy",
    ):
        response = await person.client.get(path)
        assert response.status_code == 404, path
        assert NOT_FOUND in response.text and owner.email not in response.text
    for path, fields in (
        (f"/support/tickets/{ticket_id}/reply", {"body": "hi", "status": "waiting"}),
        (f"/support/tickets/{ticket_id}/status", {"status": "closed"}),
        (f"/support/tickets/{ticket_id}/assign", {"assignee_id": person.id}),
    ):
        assert (await _post(person, path, **fields)).status_code == 404, path
    (ticket,) = await rows(api, select(Ticket))
    assert (ticket.status, ticket.assignee_id) == ("open", None)


async def test_support_answers_assigns_and_closes_from_the_console(api: Api) -> None:
    owner = await api.sign_up()
    ticket_id = await open_ticket(owner, "Billing question", "Why two charges?")
    member = await staff(api)
    queue = await member.client.get("/support?status=open")
    assert queue.status_code == 200 and "Billing question" in queue.text
    assert owner.email in queue.text
    page = await member.client.get(f"/support/tickets/{ticket_id}")
    assert "Why two charges?" in page.text

    empty = await _post(member, f"/support/tickets/{ticket_id}/reply", body=" ", status="waiting")
    assert empty.status_code == 422 and 'role="alert">Reply: 1 to 10,000 characters.' in empty.text
    before = len(await api.emails(owner.email))
    sent = await _post(
        member, f"/support/tickets/{ticket_id}/reply", body="One is a hold.", status="waiting"
    )
    assert sent.status_code == 303
    (row, body), *_ = (await api.emails(owner.email))[before:]
    assert "Reply to your ticket" in row.subject and "> One is a hold." in body

    assigned = await _post(member, f"/support/tickets/{ticket_id}/assign", assignee_id="")
    assert assigned.status_code == 303
    wrong = await _post(member, f"/support/tickets/{ticket_id}/assign", assignee_id=owner.id)
    assert wrong.status_code == 422
    assert 'role="alert">assignee_id must be the id of a support or admin member' in wrong.text
    closed = await _post(member, f"/support/tickets/{ticket_id}/status", status="closed")
    assert closed.status_code == 303
    row, body = (await api.emails(owner.email))[-1]
    assert "Ticket closed" in row.subject
    page = await member.client.get(closed.headers["location"])
    assert "Status changed" in page.text and '<dd id="ticket-status">closed</dd>' in page.text
    same = await _post(member, f"/support/tickets/{ticket_id}/status", status="closed")
    assert same.status_code == 409 and "already closed" in same.text


async def test_the_account_view_and_conversations_under_a_grant(api: Api) -> None:
    owner = await api.sign_up()
    await conversation(api, owner, "the secret order 7731")
    member = await staff(api)
    found = await member.client.get(f"/support/accounts?email={owner.email}")
    assert found.status_code == 200 and f"/support/accounts/{owner.id}" in found.text
    view = await member.client.get(f"/support/accounts/{owner.id}")
    assert view.status_code == 200
    assert "Shop bot" in view.text and "running" in view.text
    assert "7731" not in view.text and "playbook" not in view.text
    assert (
        len(
            await rows(api, select(AuditEvent).where(AuditEvent.action == "support.account_viewed"))
        )
        == 1
    )

    conversations = f"/support/accounts/{owner.id}/conversations"
    denied = await member.client.get(conversations)
    assert denied.status_code == 403 and "7731" not in denied.text
    assert "has not granted access" in denied.text

    ticket_id = await open_ticket(owner)
    await _post(owner, f"/help/tickets/{ticket_id}/grant", hours="1")
    listed = await member.client.get(conversations)
    assert listed.status_code == 200 and "customer-42" in listed.text
    thread_link = re.search(rf'href="({conversations}/[0-9a-f-]{{36}})"', listed.text)
    assert thread_link
    thread = await member.client.get(thread_link.group(1))
    assert thread.status_code == 200 and "the secret order 7731" in thread.text
    viewed = await rows(
        api, select(AuditEvent).where(AuditEvent.action == "support.content_viewed")
    )
    assert len(viewed) == 2
    await expire_grants(api, owner.id)
    assert (await member.client.get(thread_link.group(1))).status_code == 403


async def test_privacy_requests_from_settings_to_the_console(api: Api) -> None:
    person = await api.sign_up()
    settings = await person.client.get("/settings")
    assert 'href="/privacy-requests"' in settings.text
    shown = await person.client.get("/privacy-requests")
    assert shown.status_code == 200
    assert 'href="mailto:privacy@lunogen.example" id="privacy-contact"' in shown.text

    refused = await _post(person, "/privacy-requests", kind="complaint", body="x")
    assert refused.status_code == 422 and "Kind: choose one from the list." in refused.text
    filed = await _post(person, "/privacy-requests", kind="correction", body="My name is Ana")
    assert filed.status_code == 303
    page = await person.client.get(filed.headers["location"])
    assert "Request received" in page.text and "My name is Ana" in page.text
    (row,) = await rows(api, select(PrivacyRequest))

    member = await staff(api, "admin")
    queue = await member.client.get("/support/privacy?status=received")
    assert "Correction of my data" in queue.text and person.email in queue.text
    refused = await _post(member, f"/support/privacy/{row.id}", status="answered", response="")
    assert refused.status_code == 422 and "An answered request needs a response" in refused.text
    handled = await _post(
        member, f"/support/privacy/{row.id}", status="answered", response="Corrected to Ana."
    )
    assert handled.status_code == 303
    mail, body = (await api.emails(person.email))[-1]
    assert mail.subject == "LunoGen: Your privacy request is answered"
    assert "> Corrected to Ana." in body
    mine = await person.client.get(f"/privacy-requests/{row.id}")
    assert "Corrected to Ana." in mine.text and '<dd id="request-status">answered</dd>' in mine.text

    other = await api.sign_up()
    response = await other.client.get(f"/privacy-requests/{row.id}")
    assert response.status_code == 404 and "My name is Ana" not in response.text


async def test_the_ticket_flow_in_a_real_browser(
    browser: Browser, live_server: str, api: Api
) -> None:
    person = await api.sign_up()
    member = await staff(api)
    watched = await sign_in(browser, live_server, person)
    page = watched.page
    await page.goto(f"{live_server}/help")
    await page.fill("input[name=subject]", "Webhook fails")
    await page.fill("textarea[name=body]", "Every call answers 500")
    await page.click("text=Open ticket")
    await expect(page.locator("main .flash")).to_contain_text("Ticket opened")
    await page.select_option("select[name=hours]", "1")
    await page.click("text=Grant access")
    await expect(page.locator("#grant-state")).to_contain_text("Support may read")
    assert await fits(page, 360)
    watched.check()

    console = await sign_in(browser, live_server, member)
    staff_page = console.page
    await staff_page.goto(f"{live_server}/support")
    await staff_page.click("text=Webhook fails")
    await expect(staff_page.locator("#grant-state")).to_contain_text("granted until")
    await staff_page.fill("textarea[name=body]", "Fixed on our side.")
    await staff_page.focus("textarea[name=body]")
    await staff_page.keyboard.press("Tab")  # to the status, then the button, keyboard only
    await staff_page.keyboard.press("Tab")
    await staff_page.keyboard.press("Enter")
    await expect(staff_page.locator("main .flash")).to_contain_text("Reply sent")
    await expect(staff_page.locator("#ticket-status")).to_have_text("waiting")
    assert await fits(staff_page, 360)
    console.check()

    await page.reload()
    await expect(page.locator("#thread")).to_contain_text("Fixed on our side.")
    row, _ = (await api.emails(person.email))[-1]
    assert "Webhook fails" in row.subject


async def test_the_help_and_console_pages_pass_axe_and_fit_360_px(
    browser: Browser, live_server: str, api: Api
) -> None:
    person = await api.sign_up()
    await conversation(api, person, "Where is my parcel?")
    ticket_id = await open_ticket(person, "Parcel bot", "It loops")
    await _post(person, f"/help/tickets/{ticket_id}/grant", hours="4")
    filed = await _post(person, "/privacy-requests", kind="objection", body="Stop it")
    request_id = filed.headers["location"].split("/")[-1].split("?")[0]
    member = await staff(api, "admin")
    listed = await member.client.get(f"/support/accounts/{person.id}/conversations")
    thread = re.search(r'href="(/support/accounts/[^"]+/conversations/[0-9a-f-]{36})"', listed.text)
    assert thread
    pages = [
        (
            person,
            [
                "/help",
                f"/help/tickets/{ticket_id}",
                "/privacy-requests",
                f"/privacy-requests/{request_id}",
            ],
        ),
        (
            member,
            [
                "/support",
                f"/support/tickets/{ticket_id}",
                "/support/accounts",
                f"/support/accounts/{person.id}",
                f"/support/accounts/{person.id}/conversations",
                thread.group(1),
                "/support/privacy",
                f"/support/privacy/{request_id}",
            ],
        ),
    ]
    problems: dict[str, Any] = {}
    for who, paths in pages:
        watched = await sign_in(browser, live_server, who)
        page = watched.page
        await page.add_init_script(script=AXE)
        for path in paths:
            await page.set_viewport_size({"width": 1280, "height": 900})
            for scheme in ("light", "dark"):  # as test_accessibility checks every page
                await page.emulate_media(color_scheme=scheme)
                response = await page.goto(f"{live_server}{path}")
                assert response is not None and response.status == 200, path
                found = await _violations(page)
                if found:
                    problems[f"{path} ({scheme})"] = found
            if not await fits(page, 360):
                problems[f"{path} (360 px)"] = "horizontal scroll"
        watched.check()
    assert problems == {}


async def test_the_privacy_page_names_the_privacy_contact(api: Api) -> None:
    page = (await api.new_client().get("/privacy")).text
    assert 'href="mailto:privacy@lunogen.example"' in page
    assert 'href="/privacy-requests"' in page
    terms = (await api.new_client().get("/terms")).text
    assert "privacy@lunogen.example" not in terms
