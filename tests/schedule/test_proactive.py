"""Proactive schedules: a run written to a chosen contact on one of the agent's channels,
answered through that channel; the owner's prompt labelled for the model as the owner's task;
skipped under the channel's rules (WhatsApp's 24-hour window); the API's checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from lunogen.agent.models import AgentChannel
from lunogen.channel.contract import channel_type
from lunogen.kit.time import utcnow
from lunogen.runlog.models import AgentLogEvent
from lunogen.runtime.models import Message
from tests.agent.support import create_agent, new_dev
from tests.channel.receiver import Receiver
from tests.channel.support import new_hook, received, verified
from tests.channel.test_whatsapp import ADA, new_wa
from tests.fakes import whatsapp as fake_whatsapp
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.fakes.whatsapp import FakeWhatsApp, whatsapp_settings
from tests.helpers import Api
from tests.schedule.support import create, fire_at, runs_of

whatsapp = fake_whatsapp.whatsapp

LABEL = "[Scheduled task from the agent's owner — not a message from {who}."


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter, whatsapp: FakeWhatsApp) -> dict[str, object]:
    # Callbacks go to a receiver on 127.0.0.1; the hand-run sweeper only.
    return {
        **openrouter_settings(openrouter, allow_private_urls=True, sweep_interval_seconds=0),
        **whatsapp_settings(whatsapp),
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as fake:
        yield fake


def _later(hours: int) -> datetime:
    """A time well ahead of the real clock, so the process's own loop never fires first."""
    return (utcnow() + timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


async def test_a_proactive_run_writes_to_the_contact_through_the_webhook(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    agent_id = hook.agent["id"]
    openrouter.reply("Noted, Ada.")
    first = await hook.post({"id": "m-1", "from": "ada", "text": "Remind me of my dentist."})
    assert first.status_code == 202, first.text
    await received(receiver, 1)

    start = _later(3)
    schedule = await create(
        hook.dev,
        agent_id,
        kind="once",
        run_at=start.isoformat(),
        prompt="Remind Ada of her dentist appointment at 10.",
        channel_id=hook.id,
        contact=" ada ",
    )
    assert (schedule["channel_id"], schedule["contact"]) == (hook.id, "ada")

    openrouter.reply("Ada, your dentist is at 10 today.")
    [fired] = await fire_at(api, start)
    assert fired.status == "started"
    [_, sent] = await received(receiver, 2)
    body = verified(hook, sent)
    assert body["type"] == "message.reply" and body["to"] == "ada"
    assert body["text"] == "Ada, your dentist is at 10 today." and body["reply_to"] is None

    # The model read the owner's task as such, after the contact's own earlier words.
    messages = openrouter.last_chat.messages
    assert {"role": "user", "content": "Remind me of my dentist."} in messages
    assert messages[-1]["role"] == "user"
    assert messages[-1]["content"].startswith(LABEL.format(who="ada"))
    assert messages[-1]["content"].endswith("\nRemind Ada of her dentist appointment at 10.")

    # The run is in the contact's conversation, shown as the owner's scheduled task.
    got = await hook.dev.http.get(f"/api/v1/agents/{agent_id}/schedules/{schedule['id']}")
    assert got.json()["thread_id"] == fired.thread_id
    listed = await hook.dev.http.get(
        f"/api/v1/agents/{agent_id}/threads/{fired.thread_id}/messages"
    )
    assert [(m["role"], m["source"]) for m in listed.json()["data"]] == [
        ("user", None),
        ("assistant", None),
        ("user", "schedule"),
        ("assistant", None),
    ]
    page = await hook.dev.person.client.get(f"/agents/{agent_id}/conversations/{fired.thread_id}")
    assert page.status_code == 200 and "Scheduled task (you)" in page.text
    [run] = await runs_of(api, schedule["id"])
    assert run.status == "started" and run.message_id is not None

    # Later turns see it in the history with the same label.
    openrouter.reply("You're welcome.")
    again = await hook.post({"id": "m-2", "from": "ada", "text": "Thanks!"})
    assert again.status_code == 202, again.text
    await received(receiver, 3)
    history = openrouter.last_chat.messages
    assert history[-1] == {"role": "user", "content": "Thanks!"}
    labelled = [m for m in history if m["content"].startswith(LABEL.format(who="ada"))]
    assert len(labelled) == 1 and labelled[0]["role"] == "user"


async def test_whatsapp_outside_the_24_hour_window_skips_the_run(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    wa = await new_wa(api, whatsapp)
    openrouter.reply("Hello!")
    await wa.deliver(whatsapp.text_message(wa.number, text="Hi", wa_id=ADA))
    await wa.sent(1)
    calls = len(openrouter.chat_requests)
    agent_id = wa.agent["id"]

    # Inside the window (3 hours after the contact wrote): sent through WhatsApp.
    soon = _later(3)
    inside = await create(
        wa.dev,
        agent_id,
        kind="once",
        run_at=soon.isoformat(),
        prompt="Tell them the parcel left.",
        channel_id=wa.id,
        contact=ADA,
    )
    openrouter.reply("Your parcel left the shop.")
    [fired] = await fire_at(api, soon)
    assert fired.status == "started"
    assert (await wa.sent(2))[-1] == "Your parcel left the shop."
    calls += 1
    assert len(openrouter.chat_requests) == calls

    # Past it (26 hours after): skipped with the channel's words, nothing sent, no model call.
    late = _later(26)
    outside = await create(
        wa.dev,
        agent_id,
        kind="once",
        run_at=late.isoformat(),
        prompt="Ask them for a review.",
        channel_id=wa.id,
        contact=ADA,
    )
    [fired] = await fire_at(api, late)
    assert fired.status == "skipped" and fired.reason == "channel_rules"
    [run] = await runs_of(api, outside["id"])
    assert run.status == "skipped" and run.reason == "channel_rules"
    assert "24 hours" in run.detail and run.message_id is None
    assert len(openrouter.chat_requests) == calls
    assert len(whatsapp.sent(wa.number)) == 2
    async with api.app.state.sessionmaker() as session:
        logged = (
            await session.execute(
                select(AgentLogEvent).where(
                    AgentLogEvent.agent_id == agent_id, AgentLogEvent.event == "schedule.skipped"
                )
            )
        ).scalar_one()
        assert "24 hours" in logged.message
        scheduled = (
            await session.execute(select(Message).where(Message.source == "schedule"))
        ).scalars()
        assert len(list(scheduled)) == 1  # the inside run's only
    assert inside["id"] != outside["id"]


async def test_a_disabled_channel_skips_the_run(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    openrouter.reply("Hi.")
    await hook.post({"id": "m-1", "from": "ada", "text": "Hello"})
    await received(receiver, 1)
    start = _later(2)
    schedule = await create(
        hook.dev,
        hook.agent["id"],
        kind="once",
        run_at=start.isoformat(),
        channel_id=hook.id,
        contact="ada",
    )
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(AgentChannel)
            .where(AgentChannel.id == hook.id)
            .values(disabled_at=utcnow(), disabled_reason="its callback URL answered 410 Gone")
        )
        await session.commit()
    calls = len(openrouter.chat_requests)
    [fired] = await fire_at(api, start)
    assert fired.status == "skipped" and fired.reason == "channel_disabled"
    [run] = await runs_of(api, schedule["id"])
    assert "410 Gone" in run.detail
    assert len(openrouter.chat_requests) == calls and len(receiver.received()) == 1


async def _bad(dev: Any, agent_id: str, **body: Any) -> dict[str, Any]:
    values = {"name": "Nudge", "prompt": "Nudge them.", "kind": "once"}
    values["run_at"] = _later(2).isoformat()
    response = await dev.http.post(f"/api/v1/agents/{agent_id}/schedules", json={**values, **body})
    assert response.status_code == 422, response.text
    [detail] = response.json()["details"]
    return dict(detail)


async def test_the_api_checks_the_channel_and_the_contact(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    agent_id = hook.agent["id"]
    openrouter.reply("Hi.")
    await hook.post({"id": "m-1", "from": "ada", "text": "Hello"})
    await received(receiver, 1)

    # another agent's channel (same owner)
    other = await create_agent(hook.dev, channels=[{"type": "webhook", "mode": "sync"}])
    [foreign] = other["channels"]
    detail = await _bad(hook.dev, agent_id, channel_id=foreign["id"], contact="ada")
    assert detail["field"] == "channel_id"
    # a contact the channel never met
    detail = await _bad(hook.dev, agent_id, channel_id=hook.id, contact="bob")
    assert detail["field"] == "contact" and "never wrote" in detail["message"]
    # one without the other
    assert (await _bad(hook.dev, agent_id, channel_id=hook.id))["field"] == "contact"
    assert (await _bad(hook.dev, agent_id, contact="ada"))["field"] == "channel_id"
    # a channel that answers only the request that brought a message
    api_agent = await create_agent(
        hook.dev, channels=[{"type": "webchat", "allowed_origins": ["https://shop.example"]}]
    )
    [api_channel] = api_agent["channels"]
    detail = await _bad(hook.dev, api_agent["id"], channel_id=api_channel["id"], contact="ada")
    assert detail["field"] == "channel_id" and "on its own" in detail["message"]

    # PATCH: checked the same way, and a 422 changes nothing
    schedule = await create(
        hook.dev, agent_id, kind="once", run_at=_later(2).isoformat(), name="Plain"
    )
    path = f"/api/v1/agents/{agent_id}/schedules/{schedule['id']}"
    refused = await hook.dev.http.patch(path, json={"channel_id": hook.id, "contact": "bob"})
    assert refused.status_code == 422 and refused.json()["details"][0]["field"] == "contact"
    assert (await hook.dev.http.get(path)).json()["channel_id"] is None
    made = await hook.dev.http.patch(path, json={"channel_id": hook.id, "contact": "ada"})
    assert made.status_code == 200 and made.json()["contact"] == "ada"
    cleared = await hook.dev.http.patch(path, json={"channel_id": None, "contact": None})
    assert cleared.status_code == 200 and cleared.json()["channel_id"] is None

    # another owner: 404 for the agent, whatever channel is named
    stranger = await new_dev(api)
    response = await stranger.http.post(
        f"/api/v1/agents/{agent_id}/schedules",
        json={
            "name": "x",
            "prompt": "x",
            "kind": "once",
            "run_at": _later(2).isoformat(),
            "channel_id": hook.id,
            "contact": "ada",
        },
    )
    assert response.status_code == 404
    assert (await stranger.http.patch(path, json={"contact": "ada"})).status_code == 404


async def test_the_dashboard_form_chooses_the_channel_and_contact(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    person = hook.dev.person
    openrouter.reply("Hi.")
    await hook.post({"id": "m-1", "from": "ada", "text": "Hello"})
    await received(receiver, 1)
    base = f"/agents/{hook.agent['id']}/schedules"
    listed = await person.client.get(base)
    assert f'<option value="{hook.id}">Webhook channel {hook.id[:8]}</option>' in listed.text
    fields = {
        "csrf_token": person.csrf,
        "name": "Nudge",
        "kind": "once",
        "run_at": _later(30).strftime("%Y-%m-%dT%H:%M"),
        "timezone": "UTC",
        "prompt": "Nudge Ada.",
        "channel_id": hook.id,
        "enabled": "on",
    }
    refused = await person.client.post(base, data={**fields, "contact": "bob"})
    assert refused.status_code == 422 and "Contact: " in refused.text
    assert "never wrote" in refused.text
    made = await person.client.post(base, data={**fields, "contact": "ada"})
    assert made.status_code == 303, made.text
    [schedule] = (await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}/schedules")).json()
    assert (schedule["channel_id"], schedule["contact"]) == (hook.id, "ada")
    one = await person.client.get(f"{base}/{schedule['id']}")
    assert "each run writes to <strong>ada</strong>" in one.text
    # saved again without touching the target; then switched back to its own conversation
    saved = await person.client.post(
        f"{base}/{schedule['id']}",
        data={**fields, "name": "Nudge 2", "contact": "ada"},
    )
    assert saved.status_code == 303, saved.text
    back = await person.client.post(
        f"{base}/{schedule['id']}", data={**fields, "channel_id": "", "contact": ""}
    )
    assert back.status_code == 303, back.text
    got = (await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}/schedules")).json()
    assert got[0]["name"] == "Nudge" and got[0]["channel_id"] is None


def test_each_channel_type_says_when_the_agent_may_write_first() -> None:
    now = utcnow()
    wrote = {
        "never": None,
        "an hour ago": now - timedelta(hours=1),
        "25 h ago": now - timedelta(hours=25),
    }
    allowed = {
        name: [
            when
            for when, at in wrote.items()
            if kind.proactive_refusal(last_inbound_at=at, now=now) is None
        ]
        for name in ("telegram", "whatsapp", "webhook", "webchat")
        if (kind := channel_type(name)) is not None
    }
    assert allowed == {
        "telegram": ["an hour ago", "25 h ago"],
        "whatsapp": ["an hour ago"],
        "webhook": ["never", "an hour ago", "25 h ago"],
        "webchat": [],
    }
    whatsapp_type = channel_type("whatsapp")
    assert whatsapp_type is not None
    edge = whatsapp_type.proactive_refusal(  # inside the margin Meta's clock may differ by
        last_inbound_at=now - timedelta(hours=23, minutes=59), now=now
    )
    assert edge is not None and "24 hours" in edge
