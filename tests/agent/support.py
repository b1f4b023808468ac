"""Helpers for the agent tests: a developer with a key, channel bodies with fresh secrets, rows."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from tests.helpers import Api, Signed

MODEL = "openai/gpt-4o-mini"
NOT_FOUND = {"error": "Agent not found"}


@dataclass
class Dev:
    """A signed-up person and an API client holding their key."""

    person: Signed
    http: httpx.AsyncClient

    @property
    def id(self) -> str:
        return self.person.id


async def new_dev(api: Api, *, plan: str = "pro", scopes: list[str] | None = None) -> Dev:
    """Pro by default, so that tests are not throttled by the Free plan's 30 requests/min."""
    person = await api.sign_up()
    if plan != "free":
        await api.set_plan(person, plan)
    key = await api.create_key(person, scopes)
    return Dev(person=person, http=api.key_client(key))


def telegram_token() -> str:
    return f"{secrets.randbelow(10**9) + 10**8}:AA{secrets.token_urlsafe(24)}"


def whatsapp(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "whatsapp",
        "phone_number_id": "106540352242922",
        "access_token": "EAAG" + secrets.token_hex(24),
        "app_secret": secrets.token_hex(16),
        "verify_token": "verify-" + secrets.token_hex(8),
        **overrides,
    }


def telegram(**overrides: Any) -> dict[str, Any]:
    return {"type": "telegram", "bot_token": telegram_token(), **overrides}


def webhook(**overrides: Any) -> dict[str, Any]:
    return {"type": "webhook", **overrides}


def webchat(**overrides: Any) -> dict[str, Any]:
    return {"type": "webchat", **overrides}


def agent_body(**overrides: Any) -> dict[str, Any]:
    return {"name": "Support bot", "model": MODEL, "instructions": "Be kind.", **overrides}


def secret_values(channels: list[dict[str, Any]]) -> list[str]:
    """Every secret a client put in these channel bodies."""
    names = ("access_token", "app_secret", "verify_token", "bot_token")
    return [str(c[n]) for c in channels for n in names if n in c]


async def create_agent(dev: Dev, **overrides: Any) -> dict[str, Any]:
    response = await dev.http.post("/api/v1/agents", json=agent_body(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def raw_rows(api: Api, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows as the database holds them, without the ORM."""
    async with api.app.state.sessionmaker() as session:
        result = await session.execute(text(sql), params)
        return [dict(row._mapping) for row in result]


def sqlite_bytes(database_url: str) -> bytes | None:
    """The raw bytes of the SQLite database and its WAL, or None on another database."""
    if not database_url.startswith("sqlite"):
        return None
    path = Path(database_url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())
