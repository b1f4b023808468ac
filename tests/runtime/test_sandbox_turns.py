"""Code and file tools in whole turns: the model runs code in the agent's sandbox and reads back."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lunogen.account.plans import PLAN_LIMITS
from lunogen.config import Settings
from lunogen.sandbox import diskimage
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.agent.support import Dev, create_agent, new_dev, raw_rows
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.runtime.sandbox_support import run_code_without_approval, say, tool_results
from tests.sandbox.support import KERNEL_QUOTA, mounts_under, unavailable

pytestmark = pytest.mark.usefixtures("bwrap_available")

CODE_TOOLS = ["run_code", "read_file", "write_file", "list_files"]


async def _running_agent(api: Api, *, plan: str = "pro", **overrides: Any) -> tuple[Dev, str]:
    dev = await new_dev(api, plan=plan)
    agent = await create_agent(dev, tools=overrides.pop("tools", CODE_TOOLS), **overrides)
    await run_code_without_approval(dev, agent["id"])
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    return dev, str(agent["id"])


def _workspace(settings: Settings, agent_id: str) -> Path:
    return settings.workspaces_dir / agent_id


async def test_the_model_runs_code_and_answers_with_its_output(
    api: Api, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    dev, agent_id = await _running_agent(api)
    assert _workspace(settings, agent_id).is_dir()  # provisioned at deploy

    openrouter.call_tool("run_code", {"language": "python", "code": "print(6 * 7)"})
    openrouter.echo()
    body = await say(dev, agent_id, "What is six times seven? Compute it.")

    [result] = tool_results(openrouter)
    assert result.startswith("exit code: 0 (")
    assert "stdout:\n42\n" in result
    assert body["reply"]["text"] == result  # the echoing fake answers with the tool's output
    [run] = await raw_rows(
        api,
        "SELECT message, level, details FROM agent_log_events "
        "WHERE agent_id = :a AND event = 'sandbox.run'",
        a=agent_id,
    )
    assert run["level"] == "info"
    assert "run_code (python) exited 0" in run["message"]
    details = run["details"] if isinstance(run["details"], dict) else json.loads(run["details"])
    assert details["backend"] == "bwrap" and details["exit_code"] == 0


async def test_files_written_by_one_tool_are_seen_by_code_and_the_other_tools(
    api: Api, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.call_tool("write_file", {"path": "data/in.txt", "content": "3\n4\n"})
    openrouter.call_tool(
        "run_code",
        {
            "language": "bash",
            "code": "paste -sd+ data/in.txt | bc > data/sum.txt; cat data/sum.txt; pwd",
        },
    )
    openrouter.call_tool("list_files", {"path": "data"})
    openrouter.call_tool("read_file", {"path": "data/sum.txt"})
    openrouter.reply("Seven.")
    await say(dev, agent_id, "Add the numbers")

    written, ran, listed, read = tool_results(openrouter)
    assert written == "Wrote 4 bytes to data/in.txt."
    assert "stdout:\n7\n/workspace\n" in ran
    assert "data/in.txt (4 bytes)" in listed and "data/sum.txt (2 bytes)" in listed
    assert read == "7\n"
    assert (_workspace(settings, agent_id) / "data" / "sum.txt").read_text() == "7\n"


async def test_escapes_through_the_file_tools_are_refused_and_change_nothing(
    api: Api, openrouter: FakeOpenRouter, settings: Settings, tmp_path: Path
) -> None:
    dev, agent_id = await _running_agent(api)
    _, other_id = await _running_agent(api)
    secret = _workspace(settings, other_id) / "secret.txt"
    secret.write_text("other agent's data")
    openrouter.call_tool("read_file", {"path": f"../{other_id}/secret.txt"})
    openrouter.call_tool("read_file", {"path": "/etc/shadow"})
    openrouter.call_tool("write_file", {"path": "../../escaped.txt", "content": "x"})
    openrouter.call_tool(
        "run_code", {"language": "bash", "code": f"ln -s /etc/passwd link; ln -s ../{other_id} up"}
    )
    openrouter.call_tool("read_file", {"path": "link"})
    openrouter.call_tool("list_files", {"path": "up"})
    openrouter.reply("I could not.")
    await say(dev, agent_id, "Read everything you can")

    results = tool_results(openrouter)
    assert len(results) == 6
    for result in (results[0], results[1], results[2], results[4], results[5]):
        assert result.startswith("Error:"), result
    assert "other agent's data" not in "".join(results)
    assert "root:" not in "".join(results)
    assert not (settings.workspaces_dir.parent / "escaped.txt").exists()
    assert not (settings.workspaces_dir / "escaped.txt").exists()
    assert secret.read_text() == "other agent's data"


async def test_a_run_past_the_wall_time_is_stopped_and_logged_as_a_warning(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = PLAN_LIMITS["free"]
    short = replace(free, sandbox=replace(free.sandbox, wall_seconds=2))
    monkeypatch.setitem(PLAN_LIMITS, "free", short)
    dev, agent_id = await _running_agent(api, plan="free")
    openrouter.call_tool("run_code", {"language": "bash", "code": "echo started; sleep 600"})
    openrouter.echo()
    body = await say(dev, agent_id, "Wait a long time")

    result = body["reply"]["text"]
    assert result.startswith("exit code: killed (")
    assert "stopped: it ran past the wall-time limit of 2 s" in result
    assert "stdout:\nstarted" in result
    [run] = await raw_rows(
        api,
        "SELECT level, message FROM agent_log_events WHERE agent_id = :a AND event = 'sandbox.run'",
        a=agent_id,
    )
    assert run["level"] == "warning"
    assert "wall-time" in run["message"]


async def test_agents_without_code_tools_get_an_error_string_not_a_crash(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api, tools=["current_time"])
    openrouter.call_tool("run_code", {"language": "python", "code": "print(1)"})
    openrouter.reply("No.")
    await say(dev, agent_id, "Run code")
    [result] = tool_results(openrouter)
    assert result == "Error: the tool 'run_code' is not enabled for this agent."


async def test_deleting_an_agent_destroys_its_workspace(
    api: Api, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.call_tool("write_file", {"path": "keep.txt", "content": "data"})
    openrouter.reply("Saved.")
    await say(dev, agent_id, "Save")
    assert (_workspace(settings, agent_id) / "keep.txt").exists()

    deleted = await dev.http.delete(f"/api/v1/agents/{agent_id}")
    assert deleted.status_code == 204, deleted.text
    await enqueue.drain()
    await wait_idle()
    assert not _workspace(settings, agent_id).exists()
    assert mounts_under(settings.workspaces_dir) == []  # its quota image went with it
    assert not list(settings.workspaces_dir.glob(f".images/{agent_id}*"))


async def test_code_that_fills_the_workspace_is_stopped_at_the_quota(
    api: Api, openrouter: FakeOpenRouter, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if (reason := diskimage.unavailable_reason()) is not None:
        unavailable(KERNEL_QUOTA, reason)  # the watcher cannot bound parallel writers
    free = PLAN_LIMITS["free"]
    small = replace(free, sandbox=replace(free.sandbox, workspace_mb=8, max_files=500))
    monkeypatch.setitem(PLAN_LIMITS, "free", small)
    dev, agent_id = await _running_agent(api, plan="free")
    writers = "for i in $(seq 1 12); do head -c 4000000 /dev/zero > f$i & done; wait; echo done"
    openrouter.call_tool("run_code", {"language": "bash", "code": writers})
    openrouter.call_tool("write_file", {"path": "more.txt", "content": "x" * 900_000})
    openrouter.reply("Full.")
    await say(dev, agent_id, "Fill the disk")

    ran, wrote = tool_results(openrouter)
    assert "stopped: the workspace went past its quota of 8 MB" in ran, ran
    assert wrote.startswith("Error: workspace quota exceeded"), wrote
    held = _workspace(settings, agent_id)
    on_disk = sum(path.stat().st_blocks * 512 for path in held.iterdir())
    assert on_disk <= 9 * 1024 * 1024  # the quota, plus at most 1 MB
