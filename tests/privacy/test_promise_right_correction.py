"""[right-correction] You can correct your name and email in Settings, and ask us to correct
anything else.

The name: changed on the API and with the Settings form (CSRF-checked), and shown corrected;
an empty name is refused and changes nothing. The email: asked for in Settings (with the
password), confirmed by the link sent to the new address, then the account's address; a
wrong password changes and sends nothing (every refusal: `tests/account/test_email_change.py`).
Anything else: a privacy request of kind `correction` reaches the support console
(`tests/admin/test_privacy_requests.py`).
"""

from __future__ import annotations

import re

from tests.helpers import PASSWORD, Api
from tests.privacy.promises import sentence

TAG = "right-correction"
SENTENCE = sentence(TAG)
CONFIRM_LINK = re.compile(r"http://testserver(/settings/email/confirm/[A-Za-z0-9_\-]+)")


async def test_the_name_is_corrected_and_anything_else_can_be_asked(api: Api) -> None:
    person = await api.sign_up()
    renamed = await person.client.patch(
        "/api/v1/me", json={"name": "Ada Lovelace"}, headers=person.headers
    )
    assert renamed.status_code == 200, renamed.text
    assert (await person.client.get("/api/v1/me")).json()["name"] == "Ada Lovelace"
    settings = await person.client.get("/settings")
    assert settings.status_code == 200 and "Ada Lovelace" in settings.text
    empty = await person.client.patch("/api/v1/me", json={"name": " "}, headers=person.headers)
    assert empty.status_code == 422
    assert (await person.client.get("/api/v1/me")).json()["name"] == "Ada Lovelace"

    browser = person.client
    page = await browser.get("/settings")
    assert 'action="/settings/name"' in page.text
    saved = await browser.post("/settings/name", data={"csrf_token": person.csrf, "name": "A. L."})
    assert saved.status_code in (200, 303), saved.text
    assert (await browser.get("/api/v1/me")).json()["name"] == "A. L."
    forged = await browser.post("/settings/name", data={"name": "Mallory"})
    assert forged.status_code == 403
    assert (await browser.get("/api/v1/me")).json()["name"] == "A. L."

    asked = await person.client.post(
        "/api/v1/privacy/requests",
        json={"kind": "correction", "body": "My company name is wrong on an invoice."},
        headers=person.headers,
    )
    assert asked.status_code == 201 and asked.json()["kind"] == "correction"


async def test_the_email_is_corrected_in_settings_through_a_link_to_the_new_address(
    api: Api,
) -> None:
    person = await api.sign_up()
    refused = await person.client.post(
        "/settings/email",
        data={"csrf_token": person.csrf, "new_email": "ada@example.org", "password": "wrong"},
    )
    assert refused.status_code == 400
    assert await api.emails("ada@example.org") == []

    asked = await person.client.post(
        "/settings/email",
        data={"csrf_token": person.csrf, "new_email": "ada@example.org", "password": PASSWORD},
    )
    assert asked.status_code == 303, asked.text
    assert (await person.client.get("/api/v1/me")).json()["email"] == person.email
    [(_row, body)] = await api.emails("ada@example.org")
    link = CONFIRM_LINK.search(body)
    assert link, body
    confirmed = await person.client.post(link.group(1), data={"csrf_token": person.csrf})
    assert confirmed.status_code == 303, confirmed.text
    assert (await person.client.get("/api/v1/me")).json()["email"] == "ada@example.org"
    assert "<dd>ada@example.org</dd>" in (await person.client.get("/settings")).text
