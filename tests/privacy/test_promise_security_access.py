"""[security-access] Only you can see your agents and conversations; our staff see message
content only when you grant access on a support ticket, for a limited time, and every such
access is recorded.

One flow: another account gets 404 for the agent, its threads and messages; staff without a
grant get 403 and no text; under the owner's grant they read it and each read is an audit row
the owner sees; when the grant expires, 403 again. Per verb and per scope:
`tests/agent/test_access.py`; the console: `tests/admin/test_support_console.py`.
"""

from __future__ import annotations

from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from tests.account.support import rows
from tests.admin.support import conversation, expire_grants, open_ticket, staff
from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "security-access"
SENTENCE = sentence(TAG)
CONSOLE = "/api/v1/admin/support"


async def test_only_the_owner_and_granted_staff_for_a_while_and_each_read_recorded(
    api: Api,
) -> None:
    owner = await api.sign_up()
    agent_id, thread_id = await conversation(api, owner, "the secret recipe is 7 spices")
    mine = f"/api/v1/agents/{agent_id}"
    paths = [mine, f"{mine}/threads", f"{mine}/threads/{thread_id}/messages", f"{mine}/memory"]
    for path in paths:
        assert (await owner.client.get(path)).status_code == 200, path

    stranger = await api.sign_up()
    stranger_key = api.key_client(await api.create_key(stranger))
    for client in (stranger.client, stranger_key):
        for path in paths:
            response = await client.get(path)
            assert response.status_code == 404, (path, response.status_code)
            assert "7 spices" not in response.text

    member = await staff(api)
    thread = f"{CONSOLE}/accounts/{owner.id}/threads/{thread_id}"
    for path in paths:  # staff have no way in through the owner's API either
        assert (await member.client.get(path)).status_code == 404
    denied = await member.client.get(thread)
    assert denied.status_code == 403 and "7 spices" not in denied.text

    ticket = await open_ticket(owner)
    granted = await owner.client.post(
        f"/api/v1/support/tickets/{ticket}/grant", json={"hours": 1}, headers=owner.headers
    )
    assert granted.status_code == 201, granted.text
    read = await member.client.get(thread)
    assert read.status_code == 200 and "7 spices" in read.text
    viewed = await rows(
        api, select(AuditEvent).where(AuditEvent.action == "support.content_viewed")
    )
    assert [(e.actor_user_id, e.subject_user_id, e.target_id) for e in viewed] == [
        (member.id, owner.id, thread_id)
    ]
    log = (await owner.client.get("/api/v1/audit?action=support.content_viewed")).json()
    assert log["total"] == 1

    await expire_grants(api, owner.id)
    again = await member.client.get(thread)
    assert again.status_code == 403 and "7 spices" not in again.text
