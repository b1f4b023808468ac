"""Skills in the dashboard: write one in the form (scanned, with findings shown), approve a
flagged version, edit (a new version), upload a zip, delete; errors stay on the form;
another tenant's skill is the 404 page."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.agent.support import create_agent, new_dev
from tests.dashboard.browser import fits, sign_in
from tests.helpers import Api, Signed
from tests.skill.support import CLEAN_SCRIPT, FLAGGED_BODY, make_zip, skill_md


def _form(person: Signed, md: str, **files: str) -> dict[str, str]:
    form = {"csrf_token": person.csrf, "skill_md": md}
    for index, (path, content) in enumerate(files.items()):
        form[f"path_{index}"] = path
        form[f"content_{index}"] = content
    return form


async def test_a_skill_written_in_the_form_is_scanned_approved_edited_and_deleted(
    api: Api,
) -> None:
    dev = await new_dev(api)
    person = dev.person
    empty = await person.client.get("/skills")
    assert "No skills yet" in empty.text
    made = await person.client.post("/skills/new", data=_form(person, skill_md(body=FLAGGED_BODY)))
    assert made.status_code == 303, made.text
    page_url = made.headers["location"]
    skill_id = page_url.rsplit("/", 1)[1]
    shown = await person.client.get(page_url)
    assert "flagged" in shown.text and "curl" in shown.text
    assert "Approve version 1" in shown.text
    approved = await person.client.post(
        f"/skills/{skill_id}/approve", data={"csrf_token": person.csrf, "version": "1"}
    )
    assert approved.status_code == 303
    assert (await dev.http.get(f"/api/v1/skills/{skill_id}")).json()["status"] == "approved"

    edit = await person.client.get(f"/skills/{skill_id}/edit")
    assert "name: pdf-tools" in edit.text
    saved = await person.client.post(
        f"/skills/{skill_id}/edit",
        data=_form(person, skill_md(), **{"scripts/extract.py": CLEAN_SCRIPT}),
    )
    assert saved.status_code == 303
    api_view = (await dev.http.get(f"/api/v1/skills/{skill_id}")).json()
    assert (api_view["version"], api_view["status"]) == (2, "clean")
    assert [f["path"] for f in api_view["files"]] == ["scripts/extract.py"]

    # In use: the page says by whom and offers no delete.
    agent = await create_agent(dev, skills=[skill_id])
    in_use = await person.client.get(f"/skills/{skill_id}")
    assert agent["name"] in in_use.text and "Delete pdf-tools" not in in_use.text
    refused = await person.client.post(
        f"/skills/{skill_id}/delete", data={"csrf_token": person.csrf}
    )
    assert refused.status_code == 409
    await dev.http.patch(f"/api/v1/agents/{agent['id']}", json={"skills": []})
    gone = await person.client.post(f"/skills/{skill_id}/delete", data={"csrf_token": person.csrf})
    assert gone.status_code == 303
    assert (await dev.http.get(f"/api/v1/skills/{skill_id}")).status_code == 404


async def test_a_bad_package_stays_on_the_form_with_the_reason(api: Api) -> None:
    person = (await new_dev(api)).person
    bad = await person.client.post(
        "/skills/new", data=_form(person, "no front matter here", **{"../x.py": "print(1)"})
    )
    assert bad.status_code == 422
    assert 'role="alert"' in bad.text and "no front matter here" in bad.text
    assert "print(1)" in bad.text  # what was typed is kept
    assert (await person.client.get("/skills")).text.count("/skills/") >= 1


async def test_a_zip_upload_makes_a_skill_and_a_new_version(api: Api) -> None:
    dev = await new_dev(api)
    person = dev.person
    data = make_zip({"SKILL.md": skill_md(name="zipped"), "scripts/extract.py": CLEAN_SCRIPT})
    files = {"file": ("skill.zip", data, "application/zip")}
    made = await person.client.post("/skills/upload", data={"csrf_token": person.csrf}, files=files)
    assert made.status_code == 303, made.text
    skill_id = made.headers["location"].rsplit("/", 1)[1]
    again = make_zip({"SKILL.md": skill_md(name="zipped", body="# v2\n\nNew steps.\n")})
    updated = await person.client.post(
        f"/skills/{skill_id}/upload",
        data={"csrf_token": person.csrf},
        files={"file": ("skill.zip", again, "application/zip")},
    )
    assert updated.status_code == 303
    assert (await dev.http.get(f"/api/v1/skills/{skill_id}")).json()["version"] == 2
    not_zip = await person.client.post(
        "/skills/upload",
        data={"csrf_token": person.csrf},
        files={"file": ("skill.zip", b"not a zip", "application/zip")},
    )
    assert not_zip.status_code == 422 and 'role="alert"' in not_zip.text


async def test_another_tenants_skill_is_the_404_page(api: Api) -> None:
    owner = await new_dev(api)
    made = await owner.person.client.post("/skills/new", data=_form(owner.person, skill_md()))
    skill_id = made.headers["location"].rsplit("/", 1)[1]
    stranger = (await new_dev(api)).person
    for path in (f"/skills/{skill_id}", f"/skills/{skill_id}/edit"):
        seen = await stranger.client.get(path)
        assert seen.status_code == 404 and "pdf-tools" not in seen.text
    tried = await stranger.client.post(
        f"/skills/{skill_id}/delete", data={"csrf_token": stranger.csrf}
    )
    assert tried.status_code == 404
    assert (await owner.http.get(f"/api/v1/skills/{skill_id}")).status_code == 200


async def test_skills_in_a_real_browser(browser: Browser, live_server: str, api: Api) -> None:
    person = await api.sign_up()
    watched = await sign_in(browser, live_server, person)
    page = watched.page
    await page.click("nav.sections >> text=Skills")
    await page.click("text=New skill")
    await page.fill("textarea[name=skill_md]", skill_md(body=FLAGGED_BODY))
    await page.click("text=Create the skill")
    await expect(page.locator("h1")).to_have_text("pdf-tools")
    await expect(page.locator("main")).to_contain_text("flagged")
    assert await fits(page, 360)
    await page.click("text=Approve version 1")
    await expect(page.locator(".flash")).to_contain_text("approved")
    watched.check()
