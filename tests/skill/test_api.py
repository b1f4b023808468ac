"""Skill create, read, update, delete and list through the API, from JSON and from zips."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.agent.support import Dev, agent_body, new_dev, raw_rows
from tests.helpers import Api
from tests.skill.support import (
    CLEAN_SCRIPT,
    clean_package,
    create_skill,
    fields,
    flagged_package,
    make_zip,
    skill_md,
    upload_zip,
)


async def test_create_from_json_stores_version_one_clean(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_skill(dev)
    assert created["name"] == "pdf-tools"
    assert created["description"].startswith("Extract text")
    assert (created["status"], created["version"], created["findings"]) == ("clean", 1, [])
    assert created["body"].startswith("# PDF tools")
    assert created["front_matter"]["name"] == "pdf-tools"
    assert created["files"] == [
        {
            "path": "references/forms.md",
            "size": len(clean_package()["files"]["references/forms.md"]),
        },
        {"path": "scripts/extract.py", "size": len(CLEAN_SCRIPT.encode())},
    ]
    assert [v["version"] for v in created["versions"]] == [1]
    fetched = (await dev.http.get(f"/api/v1/skills/{created['id']}")).json()
    assert fetched == created
    rows = await raw_rows(api, "select content from skill_files where path = 'scripts/extract.py'")
    assert bytes(rows[0]["content"]) == CLEAN_SCRIPT.encode()


async def test_create_from_zip_in_a_top_folder_keeps_binary_assets(api: Api) -> None:
    dev = await new_dev(api)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    data = make_zip(
        {
            "pdf-tools/SKILL.md": skill_md(),
            "pdf-tools/scripts/extract.py": CLEAN_SCRIPT,
            "pdf-tools/assets/logo.png": png,
            "__MACOSX/pdf-tools/._SKILL.md": b"junk",
        }
    )
    response = await upload_zip(dev, data)
    assert response.status_code == 201, response.text
    skill = response.json()
    assert skill["status"] == "clean", skill["findings"]
    assert {f["path"]: f["size"] for f in skill["files"]} == {
        "assets/logo.png": len(png),
        "scripts/extract.py": len(CLEAN_SCRIPT.encode()),
    }
    rows = await raw_rows(api, "select content from skill_files where path = 'assets/logo.png'")
    assert bytes(rows[0]["content"]) == png
    expected = hashlib.sha256()
    for path, content in [
        ("SKILL.md", skill_md().encode()),
        ("assets/logo.png", png),
        ("scripts/extract.py", CLEAN_SCRIPT.encode()),
    ]:
        expected.update(f"{path}\0{len(content)}\0".encode())
        expected.update(content)
    assert skill["sha256"] == expected.hexdigest()


async def test_create_from_zip_at_the_root(api: Api) -> None:
    dev = await new_dev(api)
    response = await upload_zip(dev, make_zip({"SKILL.md": skill_md(name="root-skill")}))
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "root-skill"


async def test_update_makes_version_two_and_rescans(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_skill(dev)
    updated = await dev.http.put(f"/api/v1/skills/{created['id']}", json=flagged_package())
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["version"], body["status"]) == (2, "flagged")
    assert [f["rule"] for f in body["findings"]] == ["download-exec"]
    assert body["findings"][0]["file"] == "SKILL.md"
    assert body["files"] == []
    assert [v["version"] for v in body["versions"]] == [2, 1]
    assert [v["findings"] for v in body["versions"]] == [1, 0]

    # Back to a clean package: version 3, clean again.
    clean = await dev.http.put(f"/api/v1/skills/{created['id']}", json=clean_package())
    assert (clean.json()["version"], clean.json()["status"]) == (3, "clean")
    versions = (await dev.http.get(f"/api/v1/skills/{created['id']}/versions")).json()
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert versions[0]["sha256"] == versions[2]["sha256"]

    # The same package again changes nothing.
    same = await dev.http.put(f"/api/v1/skills/{created['id']}", json=clean_package())
    assert same.json()["version"] == 3
    actions = [r["action"] for r in await raw_rows(api, "select action from audit_events")]
    assert actions.count("skill.updated") == 2


async def test_update_from_zip_and_rename(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_skill(dev)
    response = await upload_zip(
        dev, make_zip({"SKILL.md": skill_md(name="pdf-reader")}), skill_id=created["id"]
    )
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["version"]) == ("pdf-reader", 2)


async def test_names_are_unique_per_owner_not_globally(api: Api) -> None:
    dev = await new_dev(api)
    first = await create_skill(dev)
    again = await dev.http.post("/api/v1/skills", json=clean_package())
    assert again.status_code == 409
    assert again.json()["skill_id"] == first["id"]
    other = await create_skill(dev, clean_package(name="other"))
    renamed = await dev.http.put(f"/api/v1/skills/{other['id']}", json=clean_package())
    assert renamed.status_code == 409
    stranger = await new_dev(api)
    assert (await stranger.http.post("/api/v1/skills", json=clean_package())).status_code == 201


async def test_delete_removes_every_version(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_skill(dev)
    await dev.http.put(f"/api/v1/skills/{created['id']}", json=flagged_package())
    response = await dev.http.delete(f"/api/v1/skills/{created['id']}")
    assert response.status_code == 204
    assert (await dev.http.get(f"/api/v1/skills/{created['id']}")).status_code == 404
    assert await raw_rows(api, "select id from skill_versions") == []
    assert await raw_rows(api, "select path from skill_files") == []
    audit = await raw_rows(api, "select action from audit_events where target_type = 'skill'")
    assert "skill.deleted" in {r["action"] for r in audit}


async def test_delete_is_refused_while_an_agent_lists_the_skill(api: Api) -> None:
    dev = await new_dev(api)
    skill = await create_skill(dev)
    agent = await dev.http.post(
        "/api/v1/agents", json=agent_body(name="Reader", skills=[skill["id"]])
    )
    assert agent.status_code == 201, agent.text
    refused = await dev.http.delete(f"/api/v1/skills/{skill['id']}")
    assert refused.status_code == 409
    assert refused.json()["agents"] == [{"id": agent.json()["id"], "name": "Reader"}]
    assert "'Reader'" in refused.json()["message"]
    assert (await dev.http.get(f"/api/v1/skills/{skill['id']}")).status_code == 200

    await dev.http.patch(f"/api/v1/agents/{agent.json()['id']}", json={"skills": []})
    assert (await dev.http.delete(f"/api/v1/skills/{skill['id']}")).status_code == 204
    # A deleted skill is unknown to agents from then on.
    again = await dev.http.patch(
        f"/api/v1/agents/{agent.json()['id']}", json={"skills": [skill["id"]]}
    )
    assert again.status_code == 422
    assert skill["id"] in fields(again)["skills"]


async def test_a_deleted_agent_does_not_hold_a_skill(api: Api) -> None:
    dev = await new_dev(api)
    skill = await create_skill(dev)
    agent = (await dev.http.post("/api/v1/agents", json=agent_body(skills=[skill["id"]]))).json()
    assert (await dev.http.delete(f"/api/v1/agents/{agent['id']}")).status_code == 204
    assert (await dev.http.delete(f"/api/v1/skills/{skill['id']}")).status_code == 204


async def test_list_pages_and_filters_by_status(api: Api) -> None:
    dev = await new_dev(api)
    clean = await create_skill(dev, clean_package(name="clean-one"))
    flagged = await create_skill(dev, flagged_package(name="flagged-one"))
    listed = (await dev.http.get("/api/v1/skills")).json()
    assert listed["total"] == 2
    assert [s["id"] for s in listed["data"]] == [flagged["id"], clean["id"]]
    assert listed["data"][0]["findings"] == 1
    assert "body" not in listed["data"][0]
    only = (await dev.http.get("/api/v1/skills", params={"status": "flagged"})).json()
    assert [s["id"] for s in only["data"]] == [flagged["id"]]
    page = (await dev.http.get("/api/v1/skills", params={"limit": 1, "offset": 1})).json()
    assert [s["id"] for s in page["data"]] == [clean["id"]]
    bad = await dev.http.get("/api/v1/skills", params={"status": "nope"})
    assert bad.status_code == 422


async def test_audit_rows_name_the_skill_and_its_findings(api: Api) -> None:
    dev = await new_dev(api)
    skill = await create_skill(dev, flagged_package())
    rows = await raw_rows(
        api, "select action, details, target_id from audit_events where target_type = 'skill'"
    )
    assert len(rows) == 1
    details: Any = rows[0]["details"]
    if isinstance(details, str):
        import json

        details = json.loads(details)
    assert rows[0]["target_id"] == skill["id"]
    assert details["rules"] == ["download-exec"]
    assert details["status"] == "flagged"


async def test_unsupported_body_types_and_bad_json(dev_api: tuple[Api, Dev]) -> None:
    _, dev = dev_api
    text = await dev.http.post(
        "/api/v1/skills", content=b"hello", headers={"content-type": "text/plain"}
    )
    assert text.status_code == 415
    broken = await dev.http.post(
        "/api/v1/skills", content=b"{", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    unknown = await dev.http.post("/api/v1/skills", json={**clean_package(), "extra": 1})
    assert fields(unknown) == {"extra": "unknown field"}
    no_file = await dev.http.post("/api/v1/skills", files={"other": ("a.zip", b"x")})
    assert "file" in fields(no_file)


async def test_only_the_newest_versions_are_kept(api: Api) -> None:
    from lunogen.skill.service import KEEP_VERSIONS

    dev = await new_dev(api)
    skill = await create_skill(dev)
    for number in range(2, KEEP_VERSIONS + 3):
        response = await dev.http.put(
            f"/api/v1/skills/{skill['id']}", json=clean_package(body=f"Version {number}")
        )
        assert response.json()["version"] == number
    versions = (await dev.http.get(f"/api/v1/skills/{skill['id']}/versions")).json()
    assert [v["version"] for v in versions] == list(range(KEEP_VERSIONS + 2, 2, -1))
    kept = await raw_rows(api, "select count(*) as n from skill_versions")
    assert kept[0]["n"] == KEEP_VERSIONS
