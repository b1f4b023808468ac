"""[right-access] You can download everything we hold about you from Settings → Export.

The Settings → Export page starts an export; the archive, its sections, its secrets left out,
its expiry and its audit: `tests/privacy/test_export.py`. Here: the page is reachable from
Settings and every table that refers to a person has an export section or a reason
(`tests/privacy/test_export.py::test_archive_holds_every_section_and_no_secret`).
"""

from __future__ import annotations

from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "right-access"
SENTENCE = sentence(TAG)


async def test_settings_leads_to_the_export_that_starts_one(api: Api) -> None:
    person = await api.sign_up()
    settings = await person.client.get("/settings")
    assert settings.status_code == 200 and 'href="/settings/export"' in settings.text
    page = await person.client.get("/settings/export")
    assert page.status_code == 200 and 'name="csrf_token"' in page.text
    started = await person.client.post("/api/v1/account/export", headers=person.headers)
    assert started.status_code == 202, started.text
    other = await api.sign_up()
    theirs = await other.client.get(f"/api/v1/account/exports/{started.json()['id']}")
    assert theirs.status_code == 404
