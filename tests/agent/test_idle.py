"""A deployed agent with no traffic costs rows only: no task, timer or object kept in memory.

`bench/idle_agents.py` measures what 100,000 of them cost a real `lunogen serve`; this is the
guard that keeps a per-agent task or cache from coming back unnoticed.
"""

from __future__ import annotations

import asyncio
import gc

from lunogen.agent.models import Agent, AgentChannel
from lunogen.runlog import logs
from tests.agent.support import create_agent, new_dev
from tests.helpers import Api

AGENTS = 20


def _timers() -> int:
    """Callbacks scheduled at a later time on this loop (`call_later`, sleeps, timeouts)."""
    scheduled: list[asyncio.TimerHandle] = getattr(asyncio.get_running_loop(), "_scheduled", [])
    return sum(1 for handle in scheduled if not handle.cancelled())


def _agents_in_memory() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Agent | AgentChannel))


async def _settle() -> None:
    await logs.drain()  # the log wake-ups of the last commits
    for _ in range(5):
        await asyncio.sleep(0)


def _process_wide(task: asyncio.Task[object]) -> bool:
    """A task of the process, not of an agent: the in-memory rate limiter's expiry loop, which
    `limits` starts at a hit and ends when its windows are empty (so it comes and goes)."""
    return "MemoryStorage" in getattr(task.get_coro(), "__qualname__", "")


async def test_deployed_agents_hold_no_task_timer_or_object(api: Api) -> None:
    dev = await new_dev(api)
    first = await create_agent(dev)  # one deploy first: what a process makes once exists now
    assert (await dev.http.post(f"/api/v1/agents/{first['id']}/deploy")).status_code == 200
    await _settle()
    tasks = set(asyncio.all_tasks())
    timers = _timers()

    for _ in range(AGENTS):
        agent = await create_agent(dev)
        deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
        assert deployed.json()["status"] == "running", deployed.text
    await _settle()

    assert {t for t in set(asyncio.all_tasks()) - tasks if not _process_wide(t)} == set()
    assert _timers() <= timers + 2  # the background loops' own sleeps, wherever they are now
    assert _agents_in_memory() == 0
    listed = (await dev.http.get("/api/v1/agents", params={"status": "running"})).json()
    assert listed["total"] == AGENTS + 1


async def test_the_guard_sees_an_agent_kept_in_memory(api: Api) -> None:
    """The object count is not blind: an agent a process keeps is found."""
    dev = await new_dev(api)
    created = await create_agent(dev)
    kept = Agent(id=created["id"], owner_id=dev.id, name="kept", model="m")
    assert _agents_in_memory() == 1
    del kept
    assert _agents_in_memory() == 0
