"""[security-audit] Sign-ins, key changes and other sensitive actions are recorded in a security
log you can read in your dashboard.

A sign-in (with its IP address and user agent), a failed sign-in, a key made and revoked, and a
password change appear in the owner's security log, on the API and on the dashboard's Security
page; another person's log does not show them. Per action and on the append-only table:
`tests/audit/test_audit_log.py`, `tests/audit/test_append_only.py`.
"""

from __future__ import annotations

from tests.helpers import PASSWORD, Api
from tests.privacy.promises import sentence

TAG = "security-audit"
SENTENCE = sentence(TAG)
NEW_PASSWORD = "an entirely new passphrase"


async def test_sensitive_actions_are_in_the_owners_security_log(api: Api) -> None:
    person = await api.sign_up()
    browser = api.new_client()
    browser.headers["User-Agent"] = "PromiseBrowser/3"
    wrong = await browser.post(
        "/api/v1/auth/login", json={"email": person.email, "password": "not the password"}
    )
    assert wrong.status_code == 401
    await api.sign_in(browser, person.email)
    created = await person.client.post(
        "/api/v1/keys", json={"name": "ci", "scopes": ["full"]}, headers=person.headers
    )
    assert created.status_code == 201
    revoked = await person.client.delete(
        f"/api/v1/keys/{created.json()['id']}", headers=person.headers
    )
    assert revoked.status_code in (200, 204), revoked.text
    changed = await person.client.post(
        "/api/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=person.headers,
    )
    assert changed.status_code in (200, 204), changed.text

    signed = await api.sign_in(api.new_client(), person.email, NEW_PASSWORD)
    log = (await signed.client.get("/api/v1/audit?limit=100")).json()
    actions = [e["action"] for e in log["data"]]
    for action in (
        "auth.sign_in",
        "auth.sign_in_failed",
        "api_key.created",
        "api_key.revoked",
        "account.password_changed",
    ):
        assert action in actions, (action, actions)
    from_browser = [e for e in log["data"] if e["action"] == "auth.sign_in" and e.get("user_agent")]
    assert any(
        e["user_agent"] == "PromiseBrowser/3" and e["ip"] == "127.0.0.1" for e in from_browser
    )

    page = await signed.client.get("/security")
    assert page.status_code == 200
    assert "api_key.created" in page.text or "API key created" in page.text

    other = await api.sign_up()
    theirs = (await other.client.get("/api/v1/audit?limit=100")).json()
    assert {e["action"] for e in theirs["data"]} & {"api_key.created", "api_key.revoked"} == set()
