"""Deploy and the sandbox: code tools need a working backend; other agents deploy without one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lunogen.config import Settings
from lunogen.sandbox import edge as sandbox_edge
from lunogen.sandbox.workspace import Workspace
from tests.agent.support import create_agent, new_dev
from tests.helpers import Api
from tests.sandbox.support import mounts_under, release_workspaces


@pytest.fixture(autouse=True)
def no_mount_left_behind(tmp_path: Path) -> Iterator[None]:
    """Workspaces the test made (and any quota image mounted for them) go with it."""
    yield
    release_workspaces(tmp_path)
    assert mounts_under(tmp_path) == []


@pytest.fixture
def no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        sandbox_edge, "backend_unavailable_reason", lambda name: f"{name} is not on this machine"
    )


@pytest.mark.usefixtures("no_backend")
async def test_an_agent_with_code_tools_cannot_deploy_without_a_sandbox(
    api: Api, settings: Settings
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["run_code"])
    response = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error.startswith("Deploy failed: its code tools need a sandbox, and none works")
    assert "bwrap: bwrap is not on this machine" in error
    assert "LUNOGEN_SANDBOX=process" in error
    shown = (await dev.http.get(f"/api/v1/agents/{agent['id']}")).json()
    assert shown["status"] == "error"
    assert not (settings.workspaces_dir / agent["id"]).exists()


@pytest.mark.usefixtures("no_backend")
async def test_an_agent_without_code_tools_deploys_without_a_sandbox(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["current_time"])
    response = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "running"


async def test_an_explicit_process_sandbox_deploys_and_is_logged_as_not_isolated(
    api: Api, settings: Settings
) -> None:
    settings = settings.model_copy(update={"sandbox": "process"})
    api.app.state.settings = settings  # what the deploy endpoint reads
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["run_code"])
    response = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert response.status_code == 200, response.text
    logs = (await dev.http.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]
    [provisioned] = [e for e in logs if e["event"] == "sandbox.provisioned"]
    assert provisioned["details"] == {"backend": "process", "isolated": False, "skills": 0}
    assert (settings.workspaces_dir / agent["id"]).is_dir()
    # No quota image yet (mkfs and mount cost ~25 ms): the agent's first run makes it.
    workspace = Workspace(settings.workspaces_dir / agent["id"])
    assert not workspace.image.exists() and not workspace.image.mounted()
