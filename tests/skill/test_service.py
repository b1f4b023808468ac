"""The functions the runtime and deploy call: usable_skills and skill_problems."""

from __future__ import annotations

from lunogen.skill.service import skill_problems, usable_skills
from tests.agent.support import new_dev
from tests.helpers import Api
from tests.skill.support import CLEAN_SCRIPT, clean_package, create_skill, flagged_package


async def test_usable_skills_in_order_with_files_only_when_asked(api: Api) -> None:
    dev = await new_dev(api)
    first = await create_skill(dev, clean_package(name="first"))
    flagged = await create_skill(dev, flagged_package(name="risky"))
    second = await create_skill(dev, clean_package(name="second", body="Second body"))
    approved = await create_skill(dev, flagged_package(name="approved-one"))
    await dev.http.post(f"/api/v1/skills/{approved['id']}/approve")
    stranger = await new_dev(api)
    theirs = await create_skill(stranger, clean_package(name="theirs"))
    ids = [second["id"], flagged["id"], theirs["id"], "garbage", first["id"], approved["id"]]

    async with api.app.state.sessionmaker() as session:
        plain = await usable_skills(session, owner_id=dev.id, skill_ids=ids)
        full = await usable_skills(session, owner_id=dev.id, skill_ids=ids, with_files=True)
        problems = await skill_problems(session, owner_id=dev.id, skill_ids=ids)
        none = await skill_problems(session, owner_id=dev.id, skill_ids=[first["id"]])

    assert [p.name for p in plain] == ["second", "first", "approved-one"]
    assert [p.status for p in plain] == ["clean", "clean", "approved"]
    assert plain[0].body == "Second body"
    assert plain[0].version == 1 and plain[0].id == second["id"]
    assert all(p.files == {} for p in plain)
    assert full[0].files["scripts/extract.py"] == CLEAN_SCRIPT.encode()
    assert set(full[1].files) == {"scripts/extract.py", "references/forms.md"}
    assert problems == [
        "skill risky is flagged by the scanner: approve it or remove it",
        f"unknown skill {theirs['id']}",
        "unknown skill garbage",
    ]
    assert none == []


async def test_usable_skills_follow_the_current_version(api: Api) -> None:
    dev = await new_dev(api)
    skill = await create_skill(dev)
    await dev.http.put(
        f"/api/v1/skills/{skill['id']}", json={"skill_md": clean_package(body="New")["skill_md"]}
    )
    async with api.app.state.sessionmaker() as session:
        [package] = await usable_skills(
            session, owner_id=dev.id, skill_ids=[skill["id"]], with_files=True
        )
    assert (package.version, package.body, package.files) == (2, "New", {})
