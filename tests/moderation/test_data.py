"""A person's flags are theirs: in their data export (decrypted), never in another owner's, and
purged with their agent."""

from __future__ import annotations

from sqlalchemy import func, select

from lunogen.moderation.models import ModerationFlag
from lunogen.privacy.retention import purge_agent_rows
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.moderation.support import add_rule, admin, running_agent, say
from tests.privacy.test_export import download, export_ready, read_json


async def test_the_export_holds_the_owners_flags_and_no_one_elses(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    boss = await admin(api)
    await add_rule(boss, value="jackpot", direction="inbound", action="flag")
    dev, agent_id = await running_agent(api)
    other, other_agent = await running_agent(api, name="Other bot")
    openrouter.reply("Hm.")
    await say(dev, agent_id, "Win the jackpot mine")
    openrouter.reply("Hm.")
    await say(other, other_agent, "Win the jackpot theirs")
    body = await export_ready(dev.http)
    archive = await download(dev.http, body["id"])
    document = read_json(archive, "moderation.json")
    assert [f["text"] for f in document["flags"]] == ["Win the jackpot mine"]
    [flag] = document["flags"]
    assert (flag["agent_id"], flag["direction"], flag["source"], flag["status"]) == (
        agent_id,
        "inbound",
        "rule",
        "open",
    )
    assert document["suspensions"] == []
    assert "theirs" not in archive.read("moderation.json").decode()


async def test_flags_go_with_their_agent(api: Api, openrouter: FakeOpenRouter) -> None:
    boss = await admin(api)
    await add_rule(boss, value="jackpot", direction="both", action="flag")
    dev, agent_id = await running_agent(api)
    openrouter.reply("jackpot!")
    await say(dev, agent_id, "jackpot?")
    async with api.app.state.sessionmaker() as session:
        count = select(func.count()).select_from(ModerationFlag)
        assert (await session.execute(count)).scalar_one() == 2
        await purge_agent_rows(session, agent_id)
        await session.commit()
        assert (await session.execute(count)).scalar_one() == 0
