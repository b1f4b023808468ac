"""Shared by the turn tests of code tools and skills."""

from __future__ import annotations

from typing import Any

import pytest

from lunogen.sandbox.backends import backend_class
from tests.agent.support import Dev
from tests.fakes.openrouter import FakeOpenRouter


@pytest.fixture
def bwrap_available() -> None:
    reason = backend_class("bwrap").unavailable_reason()
    if reason is not None:
        pytest.skip(f"bwrap unavailable: {reason}")


async def say(dev: Dev, agent_id: str, text: str) -> dict[str, Any]:
    response = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": text, "contact": "ada"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "answered", body
    return body


def tool_results(openrouter: FakeOpenRouter) -> list[str]:
    return [m["content"] for m in openrouter.last_chat.messages if m["role"] == "tool"]
