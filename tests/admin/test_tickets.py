"""Support tickets over the API: the person's side, the console's side, and the emails."""

from __future__ import annotations

from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from lunogen.notification.models import Notification
from tests.account.support import rows
from tests.admin.support import open_ticket, staff
from tests.helpers import Api

CONSOLE = "/api/v1/admin/support"


async def test_a_ticket_thread_between_a_person_and_support_with_emails(api: Api) -> None:
    person = await api.sign_up()
    agent = await staff(api)
    created = await person.client.post(
        "/api/v1/support/tickets",
        json={"subject": "  Bot stopped  ", "body": "My bot stopped answering at noon."},
        headers=person.headers,
    )
    assert created.status_code == 201, created.text
    ticket = created.json()
    assert ticket["subject"] == "Bot stopped" and ticket["status"] == "open"
    assert [(m["author"], m["body"]) for m in ticket["messages"]] == [
        ("user", "My bot stopped answering at noon.")
    ]
    assert ticket["grant"] is None
    before = len(await api.emails(person.email))

    queue = (await agent.client.get(f"{CONSOLE}/tickets?status=open")).json()
    assert [t["id"] for t in queue["data"]] == [ticket["id"]]
    assert queue["data"][0]["user_id"] == person.id

    reply = await agent.client.post(
        f"{CONSOLE}/tickets/{ticket['id']}/messages",
        json={"body": "Your credits ran out.\nTop up and it resumes."},
        headers=agent.headers,
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["author"] == "staff"

    mine = (await person.client.get(f"/api/v1/support/tickets/{ticket['id']}")).json()
    assert mine["status"] == "waiting"
    assert [m["author"] for m in mine["messages"]] == ["user", "staff"]
    detail = (await agent.client.get(f"{CONSOLE}/tickets/{ticket['id']}")).json()
    assert detail["assignee_id"] == agent.id  # the first reply takes an unassigned ticket

    emails = (await api.emails(person.email))[before:]
    assert len(emails) == 1
    row, body = emails[0]
    assert "Reply to your ticket: Bot stopped" in row.subject
    assert "> Your credits ran out.\n> Top up and it resumes." in body
    assert f"/help/tickets/{ticket['id']}" in body
    (note,) = await rows(api, select(Notification).where(Notification.kind == "support.reply"))
    assert note.user_id == person.id and "credits" not in note.body  # text only in the email

    answer = await person.client.post(
        f"/api/v1/support/tickets/{ticket['id']}/messages",
        json={"body": "Thanks, topped up."},
        headers=person.headers,
    )
    assert answer.status_code == 201
    assert (await person.client.get(f"/api/v1/support/tickets/{ticket['id']}")).json()[
        "status"
    ] == "open"

    closed = await agent.client.post(
        f"{CONSOLE}/tickets/{ticket['id']}/status", json={"status": "closed"}, headers=agent.headers
    )
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    row, body = (await api.emails(person.email))[-1]
    assert "Ticket closed: Bot stopped" in row.subject
    assert "is now closed" in body
    statuses = await rows(api, select(Notification).where(Notification.kind == "support.status"))
    assert [n.user_id for n in statuses] == [person.id]

    late = await person.client.post(
        f"/api/v1/support/tickets/{ticket['id']}/messages",
        json={"body": "One more thing"},
        headers=person.headers,
    )
    assert late.status_code == 409
    again = await agent.client.post(
        f"{CONSOLE}/tickets/{ticket['id']}/status", json={"status": "closed"}, headers=agent.headers
    )
    assert again.status_code == 409
    changes = await rows(
        api,
        select(AuditEvent)
        .where(AuditEvent.action == "support.ticket_status_changed")
        .order_by(AuditEvent.created_at),
    )
    # The person's answer moved it back to open (their own action, not audited).
    assert [(e.details["from"], e.details["to"]) for e in changes] == [
        ("open", "waiting"),
        ("open", "closed"),
    ]
    assert all(e.subject_user_id == person.id and e.actor_user_id == agent.id for e in changes)


async def test_another_persons_ticket_is_404_everywhere(api: Api) -> None:
    owner = await api.sign_up()
    other = await api.sign_up()
    ticket_id = await open_ticket(owner)
    base = f"/api/v1/support/tickets/{ticket_id}"
    assert (await other.client.get(base)).status_code == 404
    answer = await other.client.post(f"{base}/messages", json={"body": "x"}, headers=other.headers)
    assert answer.status_code == 404
    grant = await other.client.post(f"{base}/grant", json={"hours": 2}, headers=other.headers)
    assert grant.status_code == 404
    assert (await other.client.delete(f"{base}/grant", headers=other.headers)).status_code == 404
    assert (await other.client.get("/api/v1/support/tickets")).json()["total"] == 0
    assert (await owner.client.get("/api/v1/support/tickets")).json()["total"] == 1
    unknown = await owner.client.get("/api/v1/support/tickets/" + "x" * 200)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Ticket not found"}


async def test_bad_input_is_a_4xx_naming_the_field(api: Api) -> None:
    person = await api.sign_up()
    agent = await staff(api)
    url = "/api/v1/support/tickets"
    for body, field in (
        ({"subject": "", "body": "x"}, "subject"),
        ({"subject": "   ", "body": "x"}, "subject"),
        ({"subject": "s" * 201, "body": "x"}, "subject"),
        ({"subject": "s", "body": "b" * 10_001}, "body"),
        ({"subject": "s"}, "body"),
        ({"subject": "s", "body": "x", "status": "closed"}, "status"),
    ):
        response = await person.client.post(url, json=body, headers=person.headers)
        assert response.status_code == 422, body
        assert field in {d["field"] for d in response.json()["details"]}
    ticket_id = await open_ticket(person)
    for hours in (0, 73, "soon", None):
        response = await person.client.post(
            f"{url}/{ticket_id}/grant", json={"hours": hours}, headers=person.headers
        )
        assert response.status_code == 422, hours
    console = f"{CONSOLE}/tickets/{ticket_id}"
    bad_status = await agent.client.post(
        f"{console}/status", json={"status": "solved"}, headers=agent.headers
    )
    assert bad_status.status_code == 422
    assign_person = await agent.client.post(
        f"{console}/assign", json={"assignee_id": person.id}, headers=agent.headers
    )
    assert assign_person.status_code == 422
    assert assign_person.json()["details"][0]["field"] == "assignee_id"
    assert (await agent.client.get(f"{CONSOLE}/tickets?status=solved")).status_code == 422
    assert (await person.client.get(f"{url}/{ticket_id}")).json()["status"] == "open"


async def test_the_console_is_for_support_and_admins_only(api: Api) -> None:
    person = await api.sign_up()
    ticket_id = await open_ticket(person)
    for path in ("/tickets", f"/tickets/{ticket_id}", "/accounts", f"/accounts/{person.id}"):
        response = await person.client.get(CONSOLE + path)
        assert response.status_code == 403, path
        assert response.json()["message"] == "This endpoint requires the support or admin role"
    reply = await person.client.post(
        f"{CONSOLE}/tickets/{ticket_id}/messages", json={"body": "hi"}, headers=person.headers
    )
    assert reply.status_code == 403
    assert (await api.new_client().get(f"{CONSOLE}/tickets")).status_code == 401
    admin = await staff(api, "admin")
    assert (await admin.client.get(f"{CONSOLE}/tickets")).json()["total"] == 1


async def test_assignment_and_the_queue_filters(api: Api) -> None:
    person = await api.sign_up()
    first, second = await staff(api), await staff(api)
    one = await open_ticket(person, "First")
    two = await open_ticket(person, "Second")
    assigned = await first.client.post(
        f"{CONSOLE}/tickets/{one}/assign", json={"assignee_id": second.id}, headers=first.headers
    )
    assert assigned.status_code == 200 and assigned.json()["assignee_id"] == second.id

    mine = (await second.client.get(f"{CONSOLE}/tickets?assignee=me")).json()
    assert [t["id"] for t in mine["data"]] == [one]
    nobody = (await second.client.get(f"{CONSOLE}/tickets?assignee=none")).json()
    assert [t["id"] for t in nobody["data"]] == [two]
    by_id = (await first.client.get(f"{CONSOLE}/tickets?assignee={second.id}")).json()
    assert by_id["total"] == 1

    unassigned = await first.client.post(
        f"{CONSOLE}/tickets/{one}/assign", json={"assignee_id": None}, headers=first.headers
    )
    assert unassigned.json()["assignee_id"] is None
    events = await rows(
        api,
        select(AuditEvent)
        .where(AuditEvent.action == "support.ticket_assigned")
        .order_by(AuditEvent.created_at),
    )
    assert [e.details for e in events] == [
        {"from": None, "to": second.id},
        {"from": second.id, "to": None},
    ]
    missing = await first.client.post(
        f"{CONSOLE}/tickets/nope/assign", json={"assignee_id": None}, headers=first.headers
    )
    assert missing.status_code == 404
