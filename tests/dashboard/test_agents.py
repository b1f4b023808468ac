"""The Agents and Channels pages over HTTP, as a signed-in browser uses them: forms posted with
the CSRF field, answers that are pages or redirects to pages, another tenant's ids → 404."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from lunogen.agent.models import Agent, AgentChannel
from lunogen.channel.models import ChannelContact, Delivery
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from tests.agent.support import MODEL, create_agent, new_dev, raw_rows
from tests.fakes import telegram as fake_telegram
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api, Signed

FakeTelegram = fake_telegram.FakeTelegram
telegram = fake_telegram.telegram


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter, telegram: FakeTelegram) -> dict[str, object]:
    return openrouter_settings(
        openrouter, sweep_interval_seconds=0, **fake_telegram.telegram_settings(telegram)
    )


def _form(person: Signed, **fields: Any) -> dict[str, Any]:
    return {"csrf_token": person.csrf, **fields}


async def _create(person: Signed, **fields: Any) -> str:
    body = {"name": "Shop helper", "model": MODEL, "instructions": "Be kind.", **fields}
    made = await person.client.post("/agents/new", data=_form(person, **body))
    assert made.status_code == 303, made.text
    match = re.fullmatch(r"/agents/([0-9a-f-]{36})\?outcome=created", made.headers["location"])
    assert match, made.headers["location"]
    return match.group(1)


async def test_the_list_is_empty_then_filters_by_status(api: Api) -> None:
    person = await api.sign_up()
    empty = await person.client.get("/agents")
    assert empty.status_code == 200
    assert "No agent yet" in empty.text and 'href="/agents/new"' in empty.text
    first = await _create(person, name="First")
    await _create(person, name="Second")
    deployed = await person.client.post(f"/agents/{first}/deploy", data=_form(person))
    assert deployed.status_code == 303
    listed = await person.client.get("/agents")
    assert "First" in listed.text and "Second" in listed.text
    running = await person.client.get("/agents?status=running")
    assert "First" in running.text and "Second" not in running.text
    stopped = await person.client.get("/agents?status=stopped")
    assert "No agent is stopped" in stopped.text
    # An unknown status is ignored, not an error
    assert (await person.client.get("/agents?status=nonsense")).status_code == 200


async def test_the_form_shows_the_catalog_tools_and_a_count(api: Api) -> None:
    person = await api.sign_up()
    form = await person.client.get("/agents/new")
    assert form.status_code == 200
    assert f'<option value="{MODEL}"' in form.text
    assert "per 1M tokens" in form.text and "context" in form.text
    assert re.search(r"\$\d+\.\d\d in / \$\d+\.\d\d out", form.text)
    assert '<optgroup label="openai">' in form.text
    assert 'name="tools" value="current_time"' in form.text
    assert 'id="tool-current_time-about">The current date and time' in form.text
    assert "0 of 100,000 characters" in form.text
    assert 'name="csrf_token"' in form.text


async def test_create_edit_deploy_stop_delete(api: Api) -> None:
    person = await api.sign_up()
    agent_id = await _create(person, tools="current_time", description="Answers shoppers")
    page = await person.client.get(f"/agents/{agent_id}?outcome=created")
    assert "Agent created" in page.text and "status-draft" in page.text
    assert "current_time" in page.text and "Answers shoppers" in page.text

    edit = await person.client.get(f"/agents/{agent_id}/edit")
    assert 'value="Shop helper"' in edit.text and "8 of 100,000 characters" in edit.text
    assert re.search(r'value="current_time" aria-describedby="[^"]+" checked', edit.text)
    saved = await person.client.post(
        f"/agents/{agent_id}/edit",
        data=_form(person, name="Shop helper 2", model=MODEL, instructions="Be brief."),
    )
    assert saved.status_code == 303 and saved.headers["location"].endswith("?outcome=saved")
    [row] = await raw_rows(api, "select name, instructions, tools from agents")
    assert row["name"] == "Shop helper 2" and row["instructions"] == "Be brief."
    assert "current_time" not in str(row["tools"])  # unchecked: removed

    deployed = await person.client.post(f"/agents/{agent_id}/deploy", data=_form(person))
    assert deployed.headers["location"] == f"/agents/{agent_id}?outcome=deployed"
    shown = await person.client.get(deployed.headers["location"])
    assert "Deployed: the agent is running." in shown.text and "status-running" in shown.text
    assert f'action="/agents/{agent_id}/stop"' in shown.text
    assert f'action="/agents/{agent_id}/deploy"' not in shown.text

    # A refused action shows the page with the service's reason
    again = await person.client.post(f"/agents/{agent_id}/deploy", data=_form(person))
    assert again.status_code == 409
    assert "Cannot deploy an agent that is running" in again.text and 'role="alert"' in again.text

    stopped = await person.client.post(f"/agents/{agent_id}/stop", data=_form(person))
    assert stopped.headers["location"] == f"/agents/{agent_id}?outcome=stopped"
    shown = await person.client.get(stopped.headers["location"])
    assert "status-stopped" in shown.text

    confirm = await person.client.get(f"/agents/{agent_id}/delete")
    assert "purged after 30 days" in confirm.text and "cannot be undone" in confirm.text
    gone = await person.client.post(f"/agents/{agent_id}/delete", data=_form(person))
    assert gone.status_code == 303 and gone.headers["location"] == "/agents?outcome=deleted"
    assert "Agent deleted." in (await person.client.get("/agents?outcome=deleted")).text
    assert (await person.client.get(f"/agents/{agent_id}")).status_code == 404
    [row] = await raw_rows(api, "select deleted_at, purge_after from agents")
    assert row["deleted_at"] is not None and row["purge_after"] is not None


async def test_a_validation_error_keeps_the_form_and_writes_nothing(api: Api) -> None:
    person = await api.sign_up()
    refused = await person.client.post(
        "/agents/new",
        data=_form(person, name="Kept name", model="nobody/none", instructions="Kept text"),
    )
    assert refused.status_code == 422
    assert 'role="alert"' in refused.text
    assert "unknown model &#39;nobody/none&#39;" in refused.text
    assert 'value="Kept name"' in refused.text and "Kept text" in refused.text
    blank = await person.client.post("/agents/new", data=_form(person, name=" ", model=MODEL))
    assert blank.status_code == 422 and "name: String should have at least 1" in blank.text
    unknown_tool = await person.client.post(
        "/agents/new", data=_form(person, name="X", model=MODEL, tools="rm_rf")
    )
    assert unknown_tool.status_code == 422 and "unknown tool" in unknown_tool.text
    assert await raw_rows(api, "select id from agents") == []

    agent_id = await _create(person)
    bad_edit = await person.client.post(
        f"/agents/{agent_id}/edit", data=_form(person, name="Renamed", model="nobody/none")
    )
    assert bad_edit.status_code == 422 and 'value="Renamed"' in bad_edit.text
    [row] = await raw_rows(api, "select name, model from agents")
    assert row == {"name": "Shop helper", "model": MODEL}


async def test_a_failed_deploy_shows_the_providers_reason(api: Api, telegram: FakeTelegram) -> None:
    person = await api.sign_up()
    agent_id = await _create(person)
    bot = telegram.add_bot()
    added = await person.client.post(
        f"/agents/{agent_id}/channels/new/telegram",
        data=_form(person, bot_token=bot.token, groups="mention", policy="pairing"),
    )
    assert added.status_code == 303, added.text
    ran = await person.client.post(f"/agents/{agent_id}/deploy", data=_form(person))
    assert ran.headers["location"].endswith("?outcome=deployed")
    channels = await person.client.get(f"/agents/{agent_id}/channels")
    assert "@lunobot" in channels.text and 'status-running">registered' in channels.text
    stopped = await person.client.post(f"/agents/{agent_id}/stop", data=_form(person))
    assert stopped.headers["location"].endswith("?outcome=stopped")
    telegram.revoke(bot.token)
    failed = await person.client.post(f"/agents/{agent_id}/deploy", data=_form(person))
    assert failed.headers["location"] == f"/agents/{agent_id}?outcome=failed"
    shown = await person.client.get(failed.headers["location"])
    assert "status-error" in shown.text
    alert = re.search(r'<p class="error" role="alert">([^<]*)</p>', shown.text)
    assert alert and alert.group(1).startswith("Deploy failed: telegram: Unauthorized")
    assert bot.token not in shown.text
    [row] = await raw_rows(api, "select status, last_error from agents")
    assert row["status"] == "error" and "Unauthorized" in row["last_error"]


async def test_channels_add_each_type_edit_access_pairing_and_remove(
    api: Api, telegram: FakeTelegram
) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")
    agent_id = await _create(person)
    empty = await person.client.get(f"/agents/{agent_id}/channels")
    assert "No channel yet" in empty.text
    for kind in ("webchat", "webhook", "telegram", "whatsapp"):
        guide = await person.client.get(f"/agents/{agent_id}/channels/new/{kind}")
        assert guide.status_code == 200 and "Setup" in guide.text
    assert (await person.client.get(f"/agents/{agent_id}/channels/new/fax")).status_code == 404

    webchat = await person.client.post(
        f"/agents/{agent_id}/channels/new/webchat",
        data=_form(person, title="Ask us", allowed_origins="https://shop.example.com\n"),
    )
    assert webchat.status_code == 303
    listed = await person.client.get(webchat.headers["location"])
    [chat_id] = re.findall(r'id="snippet-([0-9a-f-]{36})"', listed.text)
    snippet = f'<script src="http://testserver/chat/widget.js" data-channel="{chat_id}" async>'
    assert html.escape(snippet).replace("&quot;", "&#34;") in listed.text
    assert "https://shop.example.com" in listed.text

    # the webhook's secret is shown once, in the answer to the form, never cached
    hook = await person.client.post(
        f"/agents/{agent_id}/channels/new/webhook", data=_form(person, mode="sync")
    )
    assert hook.status_code == 200 and hook.headers["cache-control"] == "no-store"
    secret = re.search(r"whsec_[A-Za-z0-9+/=]+", hook.text)
    assert secret, hook.text
    assert 'data-copy="secret-' in hook.text and "/hooks/webhook/" in hook.text
    later = await person.client.get(f"/agents/{agent_id}/channels")
    assert secret.group(0) not in later.text and "whsec_" not in later.text

    # refused input keeps the form without echoing secrets
    bad = await person.client.post(
        f"/agents/{agent_id}/channels/new/telegram",
        data=_form(person, bot_token="not-a-token", groups="mention", greeting="Hello there"),
    )
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    assert "BotFather" in bad.text and "not-a-token" not in bad.text and "Hello there" in bad.text
    async_without_url = await person.client.post(
        f"/agents/{agent_id}/channels/new/webhook", data=_form(person, mode="async")
    )
    assert async_without_url.status_code == 422
    assert "callback_url is required" in async_without_url.text

    whatsapp = await person.client.post(
        f"/agents/{agent_id}/channels/new/whatsapp",
        data=_form(
            person,
            phone_number_id="106540352242922",
            access_token="EAAG-token-value",
            app_secret="app-secret-value",
            verify_token="my-verify-token",
            policy="open",
        ),
    )
    assert whatsapp.status_code == 303, whatsapp.text
    bot = telegram.add_bot()
    tg = await person.client.post(
        f"/agents/{agent_id}/channels/new/telegram",
        data=_form(person, bot_token=bot.token, groups="mention", policy="pairing"),
    )
    assert tg.status_code == 303, tg.text
    page = await person.client.get(f"/agents/{agent_id}/channels")
    assert "/hooks/whatsapp/" in page.text
    for value in (bot.token, "EAAG-token-value", "app-secret-value", "my-verify-token"):
        assert value not in page.text
    rows = await raw_rows(api, "select id, type, config from agent_channels order by position")
    assert [r["type"] for r in rows] == ["webchat", "webhook", "whatsapp", "telegram"]
    tg_id = rows[3]["id"]

    # pairing code: shown once; only for a pairing channel
    code = await person.client.post(
        f"/agents/{agent_id}/channels/{tg_id}/pairing-code", data=_form(person)
    )
    assert code.status_code == 200 and code.headers["cache-control"] == "no-store"
    assert re.search(r'<code id="pairing-code">[A-Z0-9]{8}</code>', code.text), code.text
    wa_id = rows[2]["id"]
    refused = await person.client.post(
        f"/agents/{agent_id}/channels/{wa_id}/pairing-code", data=_form(person)
    )
    assert refused.status_code == 409 and "pairing codes are for channels" in refused.text

    # access policy: edited in place, secrets kept
    access = await person.client.post(
        f"/agents/{agent_id}/channels/{tg_id}/access",
        data=_form(person, policy="allowlist", allowlist="12345\n67890"),
    )
    assert access.status_code == 303
    rows = await raw_rows(
        api, "select id, config, secrets from agent_channels where id = :i", i=tg_id
    )
    config = rows[0]["config"]
    config = config if isinstance(config, dict) else json.loads(config)
    assert config["access"] == {"policy": "allowlist", "allowlist": ["12345", "67890"]}
    assert rows[0]["secrets"] is not None
    bad_policy = await person.client.post(
        f"/agents/{agent_id}/channels/{tg_id}/access", data=_form(person, policy="everyone")
    )
    assert bad_policy.status_code == 422 and 'role="alert"' in bad_policy.text

    # removal, after a confirmation page
    confirm = await person.client.get(f"/agents/{agent_id}/channels/{chat_id}/remove")
    assert "Remove the Web chat channel?" in confirm.text
    removed = await person.client.post(
        f"/agents/{agent_id}/channels/{chat_id}/remove", data=_form(person)
    )
    assert removed.status_code == 303
    rows = await raw_rows(api, "select type from agent_channels order by position")
    assert [r["type"] for r in rows] == ["webhook", "whatsapp", "telegram"]


async def test_another_tenants_ids_give_the_404_page(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, channels=[{"type": "webchat"}])
    channel_id = agent["channels"][0]["id"]
    base = f"/agents/{agent['id']}"
    other = await api.sign_up()
    for path in (
        base,
        f"{base}/edit",
        f"{base}/delete",
        f"{base}/channels",
        f"{base}/channels/new/webchat",
        f"{base}/channels/{channel_id}/remove",
    ):
        answer = await other.client.get(path)
        assert answer.status_code == 404, path
        assert "Not found" in answer.text, path
    for path in (
        f"{base}/edit",
        f"{base}/deploy",
        f"{base}/start",
        f"{base}/restart",
        f"{base}/stop",
        f"{base}/delete",
        f"{base}/channels/new/webchat",
        f"{base}/channels/{channel_id}/access",
        f"{base}/channels/{channel_id}/pairing-code",
        f"{base}/channels/{channel_id}/enable",
        f"{base}/channels/{channel_id}/unpair",
        f"{base}/channels/{channel_id}/remove",
    ):
        answer = await other.client.post(path, data=_form(other, name="x", model=MODEL))
        assert answer.status_code == 404, path
    # the owner's own missing channel id is a 404 too
    owner = dev.person
    missing = await owner.client.get(f"{base}/channels/{'0' * 8}-0000-0000-0000-{'0' * 12}/remove")
    assert missing.status_code == 404
    [row] = await raw_rows(api, "select status, deleted_at from agents")
    assert row == {"status": "draft", "deleted_at": None}


async def test_a_post_without_the_csrf_field_is_refused(api: Api) -> None:
    person = await api.sign_up()
    agent_id = await _create(person)
    for path, data in (
        ("/agents/new", {"name": "Sneaky", "model": MODEL}),
        (f"/agents/{agent_id}/deploy", {}),
        (f"/agents/{agent_id}/delete", {}),
        (f"/agents/{agent_id}/channels/new/webchat", {"title": "Chat"}),
    ):
        refused = await person.client.post(path, data=data)
        assert refused.status_code == 403, path
        assert "CSRF" in refused.text, path
        wrong = await person.client.post(path, data={**data, "csrf_token": "x" * 32})
        assert wrong.status_code == 403, path
    [row] = await raw_rows(api, "select status, deleted_at from agents")
    assert row == {"status": "draft", "deleted_at": None}
    assert await raw_rows(api, "select id from agent_channels") == []


async def test_signed_out_pages_send_to_sign_in(api: Api, client: httpx.AsyncClient) -> None:
    answer = await client.get("/agents/new")
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/agents/new"


async def test_start_and_restart_show_their_outcome(api: Api) -> None:
    person = await api.sign_up()
    agent_id = await _create(person)
    refused = await person.client.post(f"/agents/{agent_id}/start", data=_form(person))
    assert refused.status_code == 409 and "Cannot start an agent that is draft" in refused.text
    for action, then in (("deploy", "deployed"), ("restart", "restarted"), ("stop", "stopped")):
        done = await person.client.post(f"/agents/{agent_id}/{action}", data=_form(person))
        assert done.headers["location"] == f"/agents/{agent_id}?outcome={then}", action
    started = await person.client.post(f"/agents/{agent_id}/start", data=_form(person))
    assert started.headers["location"] == f"/agents/{agent_id}?outcome=started"
    shown = await person.client.get(started.headers["location"])
    assert "Started: the agent is running." in shown.text and "status-running" in shown.text
    # the outcome word is looked up, never echoed; a made-up one shows nothing
    odd = await person.client.get(f"/agents/{agent_id}?outcome=<b>pwned</b>")
    assert "pwned" not in odd.text
    # ?outcome=failed only speaks of a failure when the agent is in error
    assert (
        "Deploy failed" not in (await person.client.get(f"/agents/{agent_id}?outcome=failed")).text
    )


async def test_contacts_unpairing_and_re_enabling_a_channel(
    api: Api, telegram: FakeTelegram
) -> None:
    person = await api.sign_up()
    agent_id = await _create(person)
    bot = telegram.add_bot()
    added = await person.client.post(
        f"/agents/{agent_id}/channels/new/telegram",
        data=_form(person, bot_token=bot.token, groups="mention", policy="pairing"),
    )
    assert added.status_code == 303
    [channel] = await raw_rows(api, "select id from agent_channels")
    async with api.app.state.sessionmaker() as session:
        session.add(
            ChannelContact(
                channel_id=channel["id"],
                agent_id=agent_id,
                contact="4242",
                name="Ada",
                paired_at=utcnow(),
                last_inbound_at=utcnow(),
            )
        )
        await session.execute(
            sa.update(AgentChannel)
            .where(AgentChannel.id == channel["id"])
            .values(disabled_at=utcnow(), disabled_reason="the bot was blocked")
        )
        await session.commit()
    page = await person.client.get(f"/agents/{agent_id}/channels")
    assert "Contacts (1)" in page.text and "Ada" in page.text and "paired" in page.text
    assert "disabled" in page.text and "the bot was blocked" in page.text

    enabled = await person.client.post(
        f"/agents/{agent_id}/channels/{channel['id']}/enable", data=_form(person)
    )
    assert enabled.status_code == 303
    [row] = await raw_rows(api, "select disabled_at from agent_channels")
    assert row["disabled_at"] is None

    unpaired = await person.client.post(
        f"/agents/{agent_id}/channels/{channel['id']}/unpair",
        data=_form(person, contact="4242"),
    )
    assert unpaired.status_code == 303
    [contact] = await raw_rows(api, "select paired_at from channel_contacts")
    assert contact["paired_at"] is None
    again = await person.client.post(
        f"/agents/{agent_id}/channels/{channel['id']}/unpair",
        data=_form(person, contact="4242"),
    )
    assert again.status_code == 404 and "not paired" in again.text


async def test_a_plan_limit_keeps_the_form_with_the_reason(api: Api) -> None:
    person = await api.sign_up()  # Free: 3 agents
    for n in range(3):
        await _create(person, name=f"Agent {n}")
    fourth = await person.client.post(
        "/agents/new", data=_form(person, name="Fourth", model=MODEL, instructions="Hi")
    )
    assert fourth.status_code == 403
    assert "Your Free plan allows 3 agents" in fourth.text and 'role="alert"' in fourth.text
    assert 'value="Fourth"' in fourth.text
    assert len(await raw_rows(api, "select id from agents")) == 3
    # odd paging values are read as "from the start", not as an error
    for odd in ("-1", "abc", "9" * 30):
        listed = await person.client.get(f"/agents?offset={odd}")
        assert listed.status_code == 200 and "Agent 2" in listed.text


async def test_a_model_gone_from_the_catalog_stays_shown_in_the_form(api: Api) -> None:
    person = await api.sign_up()
    agent_id = await _create(person)
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            sa.update(Agent).where(Agent.id == agent_id).values(model="gone/model-1")
        )
        await session.commit()
    edit = await person.client.get(f"/agents/{agent_id}/edit")
    assert '<option value="gone/model-1" selected>' in edit.text
    assert "not in the catalog" in edit.text
    kept = await person.client.post(
        f"/agents/{agent_id}/edit",
        data=_form(person, name="Renamed", model="gone/model-1", instructions="Be kind."),
    )
    # the model did not change, so it is not checked again: the rename is saved
    assert kept.status_code == 303
    [row] = await raw_rows(api, "select name, model from agents")
    assert row == {"name": "Renamed", "model": "gone/model-1"}


async def test_fallback_models_are_chosen_in_the_form(api: Api) -> None:
    person = await api.sign_up()
    listed = (await person.client.get("/api/v1/models")).json()["data"]
    others = [m["id"] for m in listed if m["id"] != MODEL][:2]
    agent_id = await _create(person, fallback_models=[others[0], "", others[1]])
    shown = (await person.client.get(f"/api/v1/agents/{agent_id}")).json()
    assert shown["fallback_models"] == others
    form = await person.client.get(f"/agents/{agent_id}/edit")
    assert form.text.count(" selected>") >= 3  # the model and both fallbacks
    cleared = await person.client.post(
        f"/agents/{agent_id}/edit",
        data=_form(person, name="Shop helper", model=MODEL, fallback_models=["", "", ""]),
    )
    assert cleared.status_code == 303, cleared.text
    assert (await person.client.get(f"/api/v1/agents/{agent_id}")).json()["fallback_models"] == []


async def test_a_channels_last_delivery_is_shown(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, channels=[{"type": "webhook", "mode": "sync"}])
    [channel] = agent["channels"]
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    said = await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": "Hi"})
    message_id = said.json()["message"]["id"]
    before = await dev.person.client.get(f"/agents/{agent['id']}/channels")
    assert "Last delivery" not in before.text
    async with api.app.state.sessionmaker() as session:
        session.add(
            Delivery(
                id=new_id(),
                message_id=message_id,
                agent_id=agent["id"],
                channel_id=channel["id"],
                status="failed",
                last_error="the receiver answered 500",
            )
        )
        await session.commit()
    after = await dev.person.client.get(f"/agents/{agent['id']}/channels")
    assert "Last delivery" in after.text and "the receiver answered 500" in after.text
