"""Tenant isolation and scopes on every skill endpoint."""

from __future__ import annotations

import pytest

from tests.agent.support import agent_body, new_dev
from tests.helpers import Api
from tests.skill.support import clean_package, create_skill, flagged_package, make_zip, skill_md

NOT_FOUND = {"error": "Skill not found"}


async def test_another_tenants_skill_is_not_found_on_every_endpoint(api: Api) -> None:
    owner = await new_dev(api)
    skill = await create_skill(owner, flagged_package())
    stranger = await new_dev(api)
    url = f"/api/v1/skills/{skill['id']}"
    zipped = {"file": ("s.zip", make_zip({"SKILL.md": skill_md()}), "application/zip")}
    answers = [
        await stranger.http.get(url),
        await stranger.http.get(f"{url}/versions"),
        await stranger.http.put(url, json=clean_package()),
        await stranger.http.put(url, files=zipped),
        await stranger.http.delete(url),
        await stranger.http.post(f"{url}/approve"),
    ]
    for response in answers:
        assert response.status_code == 404, response.text
        assert response.json() == NOT_FOUND
    assert (await stranger.http.get("/api/v1/skills")).json()["total"] == 0
    # Nothing changed for the owner.
    mine = (await owner.http.get(url)).json()
    assert (mine["status"], mine["version"]) == ("flagged", 1)


async def test_another_tenants_skill_cannot_be_attached(api: Api) -> None:
    owner = await new_dev(api)
    skill = await create_skill(owner)
    stranger = await new_dev(api)
    created = await stranger.http.post("/api/v1/agents", json=agent_body(skills=[skill["id"]]))
    assert created.status_code == 422
    assert created.json()["details"] == [
        {"field": "skills", "message": f"unknown skill '{skill['id']}'"}
    ]
    agent = (await stranger.http.post("/api/v1/agents", json=agent_body())).json()
    patched = await stranger.http.patch(
        f"/api/v1/agents/{agent['id']}", json={"skills": [skill["id"]]}
    )
    assert patched.status_code == 422
    # The owner can attach it.
    mine = await owner.http.post("/api/v1/agents", json=agent_body(skills=[skill["id"]]))
    assert mine.status_code == 201


@pytest.mark.parametrize("skill_id", ["nope", "00000000-0000-0000-0000-000000000000", "1 or 1=1"])
async def test_unknown_or_garbage_ids_are_not_found(api: Api, skill_id: str) -> None:
    dev = await new_dev(api)
    assert (await dev.http.get(f"/api/v1/skills/{skill_id}")).status_code == 404


async def test_read_scope_cannot_write(api: Api) -> None:
    owner = await new_dev(api)
    skill = await create_skill(owner, flagged_package())
    reader = api.key_client(await api.create_key(owner.person, ["skills:read"]))
    url = f"/api/v1/skills/{skill['id']}"
    assert (await reader.get(url)).status_code == 200
    assert (await reader.get(f"{url}/versions")).status_code == 200
    assert (await reader.get("/api/v1/skills")).status_code == 200
    zipped = {"file": ("s.zip", make_zip({"SKILL.md": skill_md()}), "application/zip")}
    refused = [
        await reader.post("/api/v1/skills", json=clean_package(name="new")),
        await reader.post("/api/v1/skills", files=zipped),
        await reader.put(url, json=clean_package()),
        await reader.delete(url),
        await reader.post(f"{url}/approve"),
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert "skills:write" in response.json()["message"]
    assert (await owner.http.get(url)).json()["status"] == "flagged"


async def test_write_scope_alone_cannot_read_and_other_scopes_cannot_touch(api: Api) -> None:
    owner = await new_dev(api)
    skill = await create_skill(owner)
    writer = api.key_client(await api.create_key(owner.person, ["skills:write"]))
    url = f"/api/v1/skills/{skill['id']}"
    for path in ("/api/v1/skills", url, f"{url}/versions"):
        response = await writer.get(path)
        assert response.status_code == 403
        assert "skills:read" in response.json()["message"]
    created = await writer.post("/api/v1/skills", json=clean_package(name="by-writer"))
    assert created.status_code == 201
    agents_only = api.key_client(await api.create_key(owner.person, ["agents:read"]))
    assert (await agents_only.get("/api/v1/skills")).status_code == 403
    assert (await agents_only.post("/api/v1/skills", json=clean_package())).status_code == 403


async def test_no_credentials_is_401(api: Api) -> None:
    client = api.new_client()
    assert (await client.get("/api/v1/skills")).status_code == 401
    assert (await client.post("/api/v1/skills", json=clean_package())).status_code == 401


async def test_browser_session_can_upload_a_zip_with_the_csrf_field(api: Api) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")
    data = make_zip({"SKILL.md": skill_md()})
    no_csrf = await person.client.post(
        "/api/v1/skills", files={"file": ("s.zip", data, "application/zip")}
    )
    assert no_csrf.status_code == 403
    with_field = await person.client.post(
        "/api/v1/skills",
        files={"file": ("s.zip", data, "application/zip")},
        data={"csrf_token": person.csrf},
    )
    assert with_field.status_code == 201, with_field.text
