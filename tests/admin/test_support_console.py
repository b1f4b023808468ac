"""The console's read-only view of an account, and conversations only under a live grant."""

from __future__ import annotations

from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from tests.account.support import rows
from tests.admin.support import conversation, expire_grants, open_ticket, staff
from tests.helpers import Api

CONSOLE = "/api/v1/admin/support"


async def _audited(api: Api, action: str) -> list[AuditEvent]:
    return await rows(
        api,
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.created_at),
    )


async def test_support_sees_the_account_and_agent_status_but_no_content(api: Api) -> None:
    owner = await api.sign_up()
    agent_id, _ = await conversation(api, owner, "my card number is 4242")
    member = await staff(api)

    found = (await member.client.get(f"{CONSOLE}/accounts?email={owner.email}")).json()
    assert [a["id"] for a in found["data"]] == [owner.id]
    response = await member.client.get(f"{CONSOLE}/accounts/{owner.id}")
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["email"] == owner.email and view["grant"] is None
    assert [(a["id"], a["status"]) for a in view["agents"]] == [(agent_id, "running")]
    assert "4242" not in response.text and "playbook" not in response.text

    (event,) = await _audited(api, "support.account_viewed")
    assert (event.actor_user_id, event.subject_user_id) == (member.id, owner.id)
    assert (event.target_type, event.target_id) == ("user", owner.id)
    assert len(await _audited(api, "support.accounts_searched")) == 1
    # The owner sees the look in their own security log.
    log = (await owner.client.get("/api/v1/audit?action=support.account_viewed")).json()
    assert log["total"] == 1

    missing = await member.client.get(f"{CONSOLE}/accounts/{'0' * 36}")
    assert missing.status_code == 404


async def test_content_is_readable_only_while_the_owners_grant_is_live(api: Api) -> None:
    owner = await api.sign_up()
    _, thread_id = await conversation(api, owner, "my card number is 4242")
    member = await staff(api)
    threads = f"{CONSOLE}/accounts/{owner.id}/threads"
    thread = f"{threads}/{thread_id}"

    for url in (threads, thread):
        denied = await member.client.get(url)
        assert denied.status_code == 403, url
        assert denied.json()["error"] == "Content access not granted"
        assert "4242" not in denied.text

    ticket_id = await open_ticket(owner)
    granted = await owner.client.post(
        f"/api/v1/support/tickets/{ticket_id}/grant", json={"hours": 2}, headers=owner.headers
    )
    assert granted.status_code == 201, granted.text
    listed = (await member.client.get(threads)).json()
    assert [t["id"] for t in listed["data"]] == [thread_id]
    assert listed["data"][0]["messages"] == 2
    read = await member.client.get(thread)
    assert read.status_code == 200
    assert [m["text"] for m in read.json()["data"]] == [
        "my card number is 4242",
        "Our opening hours are 9 to 5",
    ]
    viewed = await _audited(api, "support.content_viewed")
    assert [(e.target_type, e.target_id) for e in viewed] == [
        ("user", owner.id),
        ("thread", thread_id),
    ]
    assert all(
        e.actor_user_id == member.id
        and e.subject_user_id == owner.id
        and e.details["ticket_id"] == ticket_id
        for e in viewed
    )
    (grant_event,) = await _audited(api, "support.content_granted")
    assert grant_event.details["hours"] == 2 and grant_event.actor_user_id == owner.id
    shown = (await owner.client.get(f"/api/v1/support/tickets/{ticket_id}")).json()["grant"]
    assert shown is not None

    # Another account's thread id under this account is not found, grant or not.
    stranger = await api.sign_up()
    _, foreign = await conversation(api, stranger, "not yours")
    assert (await member.client.get(f"{threads}/{foreign}")).status_code == 404

    await expire_grants(api, owner.id)
    assert (await member.client.get(thread)).status_code == 403
    assert len(await _audited(api, "support.content_viewed")) == 2


async def test_revoking_or_closing_the_ticket_ends_the_grant(api: Api) -> None:
    owner = await api.sign_up()
    _, thread_id = await conversation(api, owner, "hello")
    member = await staff(api, "admin")  # admins use the console too
    thread = f"{CONSOLE}/accounts/{owner.id}/threads/{thread_id}"
    ticket_id = await open_ticket(owner)
    grant_url = f"/api/v1/support/tickets/{ticket_id}/grant"

    await owner.client.post(grant_url, json={"hours": 72}, headers=owner.headers)
    assert (await member.client.get(thread)).status_code == 200
    revoked = await owner.client.delete(grant_url, headers=owner.headers)
    assert revoked.status_code == 204
    assert (await member.client.get(thread)).status_code == 403
    assert (await owner.client.delete(grant_url, headers=owner.headers)).status_code == 404
    assert len(await _audited(api, "support.content_revoked")) == 1

    await owner.client.post(grant_url, json={"hours": 1}, headers=owner.headers)
    assert (await member.client.get(thread)).status_code == 200
    await member.client.post(
        f"{CONSOLE}/tickets/{ticket_id}/status", json={"status": "closed"}, headers=member.headers
    )
    assert (await member.client.get(thread)).status_code == 403
    again = await owner.client.post(grant_url, json={"hours": 1}, headers=owner.headers)
    assert again.status_code == 409


async def test_a_plain_user_cannot_read_anyone_else(api: Api) -> None:
    owner = await api.sign_up()
    _, thread_id = await conversation(api, owner, "hello")
    ticket_id = await open_ticket(owner)
    await owner.client.post(
        f"/api/v1/support/tickets/{ticket_id}/grant", json={"hours": 1}, headers=owner.headers
    )
    nosy = await api.sign_up()
    response = await nosy.client.get(f"{CONSOLE}/accounts/{owner.id}/threads/{thread_id}")
    assert response.status_code == 403
    assert "hello" not in response.text
    assert await _audited(api, "support.content_viewed") == []
