"""[collect-security] For security we keep, for each sign-in, session and sensitive change, the
time, the IP address and the browser's user agent.

A sign-in from a browser leaves its session row and its audit row with the time, the IP address
and the user agent; a password change's audit row too. The consents of
`tests/account/test_registration.py` carry the same three.
"""

from __future__ import annotations

from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from lunogen.auth.models import AuthSession as Session
from tests.account.support import rows
from tests.helpers import PASSWORD, Api
from tests.privacy.promises import sentence

TAG = "collect-security"
SENTENCE = sentence(TAG)
UA = "SecurityBrowser/9.1"


async def test_sign_ins_sessions_and_changes_keep_time_ip_and_user_agent(api: Api) -> None:
    person = await api.sign_up()
    browser = api.new_client()
    browser.headers["User-Agent"] = UA
    signed = await api.sign_in(browser, person.email)
    changed = await browser.post(
        "/api/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": "another long passphrase"},
        headers=signed.headers,
    )
    assert changed.status_code == 200, changed.text

    sessions = await rows(api, select(Session).where(Session.user_agent == UA))
    assert len(sessions) == 1
    assert sessions[0].ip == "127.0.0.1" and sessions[0].last_seen_at is not None
    for action in ("auth.sign_in", "account.password_changed"):
        events = await rows(
            api,
            select(AuditEvent).where(
                AuditEvent.action == action, AuditEvent.actor_user_id == person.id
            ),
        )
        mine = [e for e in events if e.user_agent == UA]
        assert mine, action
        assert mine[-1].ip == "127.0.0.1" and mine[-1].created_at is not None
