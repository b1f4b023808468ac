"""Channel secrets: encrypted at rest, never returned, generated webhook secret shown once,
kept across PATCH by channel id."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from sqlalchemy import select

from lunogen.agent.models import AgentChannel
from lunogen.audit.models import AuditEvent
from lunogen.config import Settings
from tests.agent.support import (
    Dev,
    agent_body,
    new_dev,
    raw_rows,
    secret_values,
    sqlite_bytes,
    telegram,
    webchat,
    webhook,
    whatsapp,
)
from tests.helpers import Api

WHSEC = re.compile(r"^whsec_([A-Za-z0-9+/]+=*)$")
CONFIGURED = {"configured": True}


@pytest.fixture
async def dev(api: Api) -> Dev:
    return await new_dev(api)


async def _stored_secrets(api: Api, channel_id: str) -> dict[str, str]:
    (row,) = await raw_rows(api, "select secrets from agent_channels where id = :id", id=channel_id)
    decrypted: dict[str, str] = json.loads(api.app.state.keyring.decrypt(row["secrets"]))
    return decrypted


async def _everything_a_client_can_read(dev: Dev, agent_id: str) -> str:
    parts = [
        (await dev.http.get("/api/v1/agents")).text,
        (await dev.http.get(f"/api/v1/agents/{agent_id}")).text,
        (await dev.http.get("/api/v1/audit", params={"limit": 100})).text,
    ]
    return "\n".join(parts)


async def test_secrets_are_encrypted_and_never_returned(
    api: Api, dev: Dev, settings: Settings
) -> None:
    channels = [whatsapp(), telegram(), webhook(mode="async", callback_url="https://e.x/hook")]
    secrets = secret_values(channels)
    assert len(secrets) == 4

    response = await dev.http.post("/api/v1/agents", json=agent_body(channels=channels))
    assert response.status_code == 201, response.text
    created = response.json()
    wa, tg, hook = created["channels"]
    assert wa == {
        "id": wa["id"],
        "type": "whatsapp",
        "phone_number_id": "106540352242922",
        "api_version": "v21.0",
        "access": {"policy": "open", "allowlist": []},
        "template_name": None,
        "template_language": "en_US",
        "access_token": CONFIGURED,
        "app_secret": CONFIGURED,
        "verify_token": CONFIGURED,
        "disabled_at": None,
        "disabled_reason": None,
        "registered_at": None,
        "registration": None,
    }
    assert tg == {
        "id": tg["id"],
        "type": "telegram",
        "bot_token": CONFIGURED,
        "access": {"policy": "pairing", "allowlist": []},
        "groups": "mention",
        "greeting": "",
        "stream_drafts": True,
        "disabled_at": None,
        "disabled_reason": None,
        "registered_at": None,
        "registration": None,
    }
    assert hook["mode"] == "async" and hook["callback_url"] == "https://e.x/hook"
    whsec = hook["secret"]["value"]

    patched = await dev.http.patch(
        f"/api/v1/agents/{created['id']}",
        json={
            "name": "Renamed",
            "channels": [
                {**c, "id": o["id"]} for c, o in zip(channels, created["channels"], strict=True)
            ],
        },
    )
    assert patched.status_code == 200, patched.text

    assert whsec in response.text  # shown once, at creation
    for secret in secrets:
        assert secret not in response.text
    later = patched.text + await _everything_a_client_can_read(dev, created["id"])
    for secret in [*secrets, whsec]:
        assert secret not in later

    rows = await raw_rows(
        api,
        "select config, secrets from agent_channels where agent_id = :a",
        a=created["id"],
    )
    assert len(rows) == 3
    stored_text = json.dumps([{k: str(v) for k, v in r.items()} for r in rows])
    for secret in [*secrets, whsec]:
        assert secret not in stored_text
    assert all(str(r["secrets"]).startswith("v1.") for r in rows)

    audit_rows = await raw_rows(api, "select details from audit_events")
    audit_text = json.dumps([str(r["details"]) for r in audit_rows])
    for secret in [*secrets, whsec]:
        assert secret not in audit_text

    raw = sqlite_bytes(settings.effective_database_url)
    if raw is not None:
        assert len(raw) > 0
        for secret in [*secrets, whsec]:
            assert secret.encode() not in raw

    assert await _stored_secrets(api, wa["id"]) == {
        "access_token": channels[0]["access_token"],
        "app_secret": channels[0]["app_secret"],
        "verify_token": channels[0]["verify_token"],
    }
    assert await _stored_secrets(api, tg["id"]) == {"bot_token": channels[1]["bot_token"]}
    assert await _stored_secrets(api, hook["id"]) == {"secret": whsec}


async def test_secrets_never_reach_the_log(
    capfd: pytest.CaptureFixture[str], api: Api, dev: Dev
) -> None:
    channels = [whatsapp(), telegram()]
    response = await dev.http.post("/api/v1/agents", json=agent_body(channels=channels))
    assert response.status_code == 201
    bad = await dev.http.post(
        "/api/v1/agents", json=agent_body(channels=[telegram(bot_token="leak" * 20)])
    )
    assert bad.status_code == 422
    await api.app.state.started  # `lunogen_started` is logged once the server answers
    captured = capfd.readouterr()
    logs = captured.out + captured.err
    assert "lunogen_started" in logs  # the capture does see the app's log
    for secret in [*secret_values(channels), "leak" * 20]:
        assert secret not in logs


async def test_webhook_secret_is_shown_once(api: Api, dev: Dev) -> None:
    created = (await dev.http.post("/api/v1/agents", json=agent_body(channels=[webhook()]))).json()
    (hook,) = created["channels"]
    assert hook["id"]
    assert hook["mode"] == "sync" and hook["callback_url"] is None
    assert hook["secret"]["configured"] is True
    whsec = hook["secret"]["value"]
    match = WHSEC.match(whsec)
    assert match, whsec
    assert len(base64.b64decode(match.group(1))) >= 24

    got = (await dev.http.get(f"/api/v1/agents/{created['id']}")).json()
    assert got["channels"][0]["secret"] == CONFIGURED
    listed = await dev.http.get("/api/v1/agents")
    assert whsec not in listed.text
    assert listed.json()["data"][0]["channels"][0]["secret"] == CONFIGURED

    # Editing the channel keeps its secret and does not show it again.
    edited = await dev.http.patch(
        f"/api/v1/agents/{created['id']}",
        json={"channels": [webhook(id=hook["id"], mode="async", callback_url="https://a.b/c")]},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["channels"][0]["secret"] == CONFIGURED
    assert whsec not in edited.text
    assert await _stored_secrets(api, hook["id"]) == {"secret": whsec}

    # A webhook channel added by PATCH gets its own secret, shown in that response only.
    added = await dev.http.patch(
        f"/api/v1/agents/{created['id']}",
        json={"channels": [webhook(id=hook["id"]), webhook()]},
    )
    assert added.status_code == 200, added.text
    kept, new = added.json()["channels"]
    assert kept["secret"] == CONFIGURED
    new_secret = new["secret"]["value"]
    assert WHSEC.match(new_secret) and new_secret != whsec
    assert await _stored_secrets(api, new["id"]) == {"secret": new_secret}
    assert new_secret not in (await dev.http.get(f"/api/v1/agents/{created['id']}")).text


async def test_patch_by_channel_id_keeps_omitted_secrets(api: Api, dev: Dev) -> None:
    original = whatsapp()
    created = (await dev.http.post("/api/v1/agents", json=agent_body(channels=[original]))).json()
    (wa,) = created["channels"]
    new_token = "EAAG-rotated-" + "z" * 20

    response = await dev.http.patch(
        f"/api/v1/agents/{created['id']}",
        json={
            "channels": [
                {
                    "id": wa["id"],
                    "type": "whatsapp",
                    "phone_number_id": "999",
                    "api_version": "v22.0",
                    "access_token": new_token,
                }
            ]
        },
    )
    assert response.status_code == 200, response.text
    (updated,) = response.json()["channels"]
    assert updated["id"] == wa["id"]
    assert updated["phone_number_id"] == "999" and updated["api_version"] == "v22.0"
    assert updated["access_token"] == CONFIGURED and updated["app_secret"] == CONFIGURED
    assert new_token not in response.text
    assert await _stored_secrets(api, wa["id"]) == {
        "access_token": new_token,
        "app_secret": original["app_secret"],
        "verify_token": original["verify_token"],
    }

    # Public fields only: every stored secret stays as it was.
    again = await dev.http.patch(
        f"/api/v1/agents/{created['id']}",
        json={"channels": [{"id": wa["id"], "type": "whatsapp", "phone_number_id": "1000"}]},
    )
    assert again.status_code == 200, again.text
    assert again.json()["channels"][0]["api_version"] == "v21.0"
    assert (await _stored_secrets(api, wa["id"]))["access_token"] == new_token


async def test_channel_without_id_must_bring_its_secrets(dev: Dev) -> None:
    created = (await dev.http.post("/api/v1/agents", json=agent_body(channels=[telegram()]))).json()
    response = await dev.http.patch(
        f"/api/v1/agents/{created['id']}", json={"channels": [{"type": "telegram"}]}
    )
    assert response.status_code == 422
    assert response.json()["details"] == [
        {"field": "channels.0.bot_token", "message": "required for a new channel"}
    ]


async def test_removed_channel_takes_its_secrets_with_it(api: Api, dev: Dev) -> None:
    created = (
        await dev.http.post("/api/v1/agents", json=agent_body(channels=[telegram(), webchat()]))
    ).json()
    tg, chat = created["channels"]
    response = await dev.http.patch(
        f"/api/v1/agents/{created['id']}", json={"channels": [webchat(id=chat["id"])]}
    )
    assert response.status_code == 200
    async with api.app.state.sessionmaker() as session:
        ids = list((await session.execute(select(AgentChannel.id))).scalars())
        assert ids == [chat["id"]]
        events = list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "agent.updated")
                )
            ).scalars()
        )
    (event,) = events
    # The web chat moved from position 1 to 0: it counts as updated.
    assert event.details["channels"] == {
        "added": [],
        "updated": [chat["id"]],
        "removed": [tg["id"]],
    }


def _no_secret_keys(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert not isinstance(item, str) or not item.startswith(("whsec_", "v1.")), key
            _no_secret_keys(item)
    elif isinstance(value, list):
        for item in value:
            _no_secret_keys(item)


async def test_webchat_has_no_secrets(api: Api, dev: Dev) -> None:
    created = (await dev.http.post("/api/v1/agents", json=agent_body(channels=[webchat()]))).json()
    _no_secret_keys(created)
    (row,) = await raw_rows(
        api, "select secrets from agent_channels where id = :id", id=created["channels"][0]["id"]
    )
    assert row["secrets"] is None
