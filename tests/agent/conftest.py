from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select, update

from lunogen.account.models import User
from lunogen.config import Settings
from lunogen.db import create_engine, create_sessionmaker
from lunogen.kit.crypto import load_keyring
from lunogen.notification.models import OutboundEmail
from tests.agent.support import agent_body
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)
from tests.helpers import PASSWORD


@pytest.fixture
async def api_for_live(
    live_server: str, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """On the live server: a verified Pro developer's full-key client and a draft agent id."""
    email = "live.dev@example.com"
    engine = create_engine(settings.effective_database_url)
    sessionmaker = create_sessionmaker(engine)
    async with httpx.AsyncClient(base_url=live_server) as browser:
        registered = await browser.post(
            "/api/v1/auth/register",
            json={
                "name": "Live Dev",
                "email": email,
                "password": PASSWORD,
                "age_confirmed": True,
                "accept_terms": True,
                "accept_privacy": True,
            },
        )
        assert registered.status_code == 201, registered.text
        async with sessionmaker() as session:
            row = (
                await session.execute(
                    select(OutboundEmail).where(OutboundEmail.to_address == email)
                )
            ).scalar_one()
            body = load_keyring(settings.secret_keys, settings.data_dir).decrypt(row.body_encrypted)
            await session.execute(update(User).where(User.email == email).values(plan="pro"))
            await session.commit()
        match = re.search(r"token=([A-Za-z0-9_\-]+)", body)
        assert match
        assert (await browser.post("/api/v1/auth/verify", json={"token": match[1]})).is_success
        assert (
            await browser.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        ).is_success
        created = await browser.post(
            "/api/v1/keys",
            json={"name": "live"},
            headers={"X-CSRF-Token": browser.cookies["lg_csrf"]},
        )
        assert created.status_code == 201, created.text
    await engine.dispose()
    client = httpx.AsyncClient(
        base_url=live_server,
        headers={"Authorization": f"Bearer {created.json()['key']}"},
        timeout=20,
    )
    agent = await client.post("/api/v1/agents", json=agent_body())
    assert agent.status_code == 201, agent.text
    yield client, agent.json()["id"]
    await client.aclose()


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    """Agents here can deploy: the model provider is the fake OpenRouter on 127.0.0.1."""
    return openrouter_settings(openrouter)
