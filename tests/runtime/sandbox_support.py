"""Shared by the turn tests of code tools and skills."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lunogen.sandbox.backends import backend_class
from tests.agent.support import Dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.sandbox.support import mounts_under, release_workspaces, unavailable


@pytest.fixture
def bwrap_available(tmp_path: Path) -> Iterator[None]:
    """Skips (or fails, when CI requires bwrap) where bwrap cannot run; after the test, the
    workspaces its agents mounted (their quota images) are destroyed."""
    reason = backend_class("bwrap").unavailable_reason()
    if reason is not None:
        unavailable("bwrap", reason)
    yield
    release_workspaces(tmp_path)
    assert mounts_under(tmp_path) == []


async def say(dev: Dev, agent_id: str, text: str) -> dict[str, Any]:
    response = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": text, "contact": "ada"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "answered", body
    return body


async def run_code_without_approval(dev: Dev, agent_id: str) -> None:
    """These tests are about the code tools, not about approvals: `run_code` runs unasked."""
    policy = await dev.http.put(
        f"/api/v1/agents/{agent_id}/approval-policy", json={"tools": {"run_code": False}}
    )
    assert policy.status_code == 200, policy.text


def tool_results(openrouter: FakeOpenRouter) -> list[str]:
    return [m["content"] for m in openrouter.last_chat.messages if m["role"] == "tool"]
