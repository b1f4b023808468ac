"""`lunogen serve --workers 2` as a real process tree on the test's data dir.

The test process sets the account up through its own app (migrated database, key, agent), then
drives the server over loopback HTTP the way a client would. Which child answered is read from
the server's log: each child's lines carry its `pid` (logs only; no response says it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen import serving
from lunogen.config import Settings
from lunogen.llm.catalog import bundled_models
from lunogen.llm.models import CatalogModel
from lunogen.runtime.models import Message
from tests.agent.support import create_agent
from tests.cli.conftest import cli_env
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)
from tests.helpers import Api

SENDERS = 8
MESSAGES = 120


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    # This process only sets the account up: its sweeper must not answer the server's messages.
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(word) for word in text.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class Server:
    """`lunogen serve --workers N`, its log in a file, its children read from /proc."""

    def __init__(self, settings: Settings, fake: FakeOpenRouter, log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGEN_")}
        self.env.update({k: v for k, v in cli_env(settings).items() if v is not None})
        self.env.update(
            {
                "LUNOGEN_CATALOG_REFRESH_HOURS": "0",
                "LUNOGEN_LOG_JSON": "true",
                "LUNOGEN_PUBLIC_URL": self.base,
                "LUNOGEN_LLM_BASE_URL": fake.base_url,
                "LUNOGEN_OPENROUTER_API_KEY": str(fake.api_key),
                "LUNOGEN_LLM_API_STYLE": "openrouter",
            }
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, workers: int = 2) -> None:
        argv = [sys.executable, "-c", "from lunogen.cli import app; app()", "serve"]
        argv += ["--port", str(self.port), "--workers", str(workers)]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(argv, env=self.env, stdout=output, stderr=output)
        self.wait_healthy()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_healthy(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not healthy within {seconds} s:\n{self.output()}")

    def wait_children(self, count: int, seconds: float = 30) -> set[int]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = {pid for pid in _children(self.pid) if _alive(pid)}
            if len(found) == count and all(f'"pid": {p}' in self.output() for p in found):
                return found  # each has logged, so each has started serving or is about to
            time.sleep(0.05)
        raise AssertionError(f"{count} children not seen within {seconds} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self, event: str) -> list[dict[str, object]]:
        found = []
        for line in self.output().splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture
def server(
    settings: Settings,
    openrouter: FakeOpenRouter,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Server]:
    running = Server(settings, openrouter, tmp_path / "serve.log")
    yield running
    if running.process is not None and running.process.poll() is None:
        running.process.kill()
        running.process.wait(timeout=30)


async def _keyed_agent(api: Api, plan: str = "pro") -> tuple[str, str]:
    from tests.agent.support import new_dev

    dev = await new_dev(api, plan=plan)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    key = dev.http.headers["Authorization"].removeprefix("Bearer ")
    return key, str(agent["id"])


async def _send_all(
    base: str, key: str, agent_id: str, per_sender: list[int]
) -> list[httpx.Response]:
    """Each sender its own keep-alive connection and contact, sending its messages in turn."""

    async def sender(index: int, count: int) -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
            return [
                await http.post(
                    f"/api/v1/agents/{agent_id}/messages",
                    json={"text": f"m{index}-{n}", "contact": f"s{index}", "wait_seconds": 30},
                )
                for n in range(count)
            ]

    batches = await asyncio.gather(*(sender(i, c) for i, c in enumerate(per_sender)))
    return [response for batch in batches for response in batch]


async def _replies(sm: async_sessionmaker[AsyncSession], agent_id: str) -> tuple[int, int, int]:
    """(inbound messages, replies, the most replies any inbound message has)."""
    async with sm() as session:
        inbound = await session.scalar(
            select(func.count()).where(Message.agent_id == agent_id, Message.role == "user")
        )
        per_message = (
            select(func.count().label("n"))
            .where(Message.agent_id == agent_id, Message.reply_to_id.is_not(None))
            .group_by(Message.reply_to_id)
            .subquery()
        )
        replies = await session.scalar(select(func.coalesce(func.sum(per_message.c.n), 0)))
        most = await session.scalar(select(func.coalesce(func.max(per_message.c.n), 0)))
    return int(inbound or 0), int(replies or 0), int(most or 0)


def _answering_pids(server: Server, agent_id: str) -> set[object]:
    return {line.get("pid") for line in server.lines("agent_log") if line["agent_id"] == agent_id}


async def test_two_processes_answer_every_message_once(
    api: Api, server: Server, sm: async_sessionmaker[AsyncSession]
) -> None:
    key, agent_id = await _keyed_agent(api)
    await asyncio.to_thread(server.start)
    children = await asyncio.to_thread(server.wait_children, 2)

    responses = await _send_all(server.base, key, agent_id, [MESSAGES // SENDERS] * SENDERS)

    assert [r.status_code for r in responses] == [200] * MESSAGES, {
        r.status_code: r.text for r in responses if r.status_code != 200
    }
    assert all(r.json()["reply"]["text"] for r in responses)
    assert await _replies(sm, agent_id) == (MESSAGES, MESSAGES, 1)
    # Both children ran turns (each turn's log lines carry the pid of the process that ran it).
    assert _answering_pids(server, agent_id) == children
    assert "database is locked" not in server.output()
    assert await asyncio.to_thread(server.stop) == 0


async def test_a_plan_limit_counts_requests_across_processes(api: Api, server: Server) -> None:
    """The Free plan allows 30 requests a minute per key: 40 messages from 8 connections get
    30 answers and 10 refusals, although both processes took some (each process counting alone
    would let more than 30 through)."""
    key, agent_id = await _keyed_agent(api, plan="free")
    await asyncio.to_thread(server.start)
    children = await asyncio.to_thread(server.wait_children, 2)

    responses = await _send_all(server.base, key, agent_id, [5] * SENDERS)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 30 + [429] * 10
    assert _answering_pids(server, agent_id) == children
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["X-RateLimit-Limit"] == "30"
    assert int(refused.headers["Retry-After"]) >= 1


def _established(port: int) -> set[str]:
    """Inodes of the established TCP sockets whose local port is `port` (IPv4)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
            inodes.add(fields[9])
    return inodes


def _sockets_held(pid: int, inodes: set[str]) -> int:
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held += 1
    return held


async def test_keep_alive_connections_spread_evenly_over_the_children(server: Server) -> None:
    """Eight clients that connect at once land unevenly (6/2, 7/1, 8/0 are common); the child
    with more than its share closes connections after answering until each holds four."""
    await asyncio.to_thread(server.start)
    children = await asyncio.to_thread(server.wait_children, 2)
    clients = [httpx.AsyncClient(base_url=server.base, timeout=30) for _ in range(8)]
    try:
        closed = 0
        for _ in range(10):
            answers = await asyncio.gather(*(c.get("/healthz") for c in clients))
            assert all(a.status_code == 200 for a in answers)
            closed += sum(a.headers.get("connection") == "close" for a in answers)
        settled = False
        for _ in range(10):  # until a round closes nothing: every client holds a connection
            answers = await asyncio.gather(*(c.get("/healthz") for c in clients))
            if not any(a.headers.get("connection") == "close" for a in answers):
                settled = True
                break
        assert settled, "the children kept closing connections"
        inodes = _established(server.port)
        held = sorted(_sockets_held(pid, inodes) for pid in children)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert held == [4, 4], (held, closed)


def test_sigterm_stops_every_process_and_exits_0(server: Server) -> None:
    server.start()
    children = server.wait_children(2)
    # Both serving (a child stopped while still starting has no lifespan to shut down).
    deadline = time.monotonic() + 30
    while server.output().count("Application startup complete") < 2:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)

    assert server.stop() == 0

    assert not any(_alive(pid) for pid in children)
    stopped = {line["pid"] for line in server.lines("serve_worker_stopped")}
    assert stopped == children
    assert [line["exit_code"] for line in server.lines("serve_worker_stopped")] == [0, 0]
    assert server.output().count("Application shutdown complete") == 2
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.base}/healthz", timeout=2)


async def test_sigterm_lets_the_turns_in_flight_finish(
    api: Api,
    server: Server,
    sm: async_sessionmaker[AsyncSession],
    openrouter: FakeOpenRouter,  # noqa: F811
) -> None:
    """Four turns wait on the model when SIGTERM comes: each child gives its own the shutdown
    grace (3 s), so all four are answered, once each, before the server exits."""
    key, agent_id = await _keyed_agent(api)
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(server.wait_children, 2)
    openrouter.stall(1.5, times=4)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.base, headers=headers, timeout=30) as http:
        for n in range(4):
            sent = await http.post(
                f"/api/v1/agents/{agent_id}/messages",
                json={"text": f"slow {n}", "contact": f"c{n}", "wait_seconds": 0},
            )
            assert sent.status_code == 202, sent.text
    deadline = time.monotonic() + 30
    while len(openrouter.chat_requests) < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(openrouter.chat_requests) == 4

    assert await asyncio.to_thread(server.stop) == 0

    assert await _replies(sm, agent_id) == (4, 4, 1)
    assert not server.lines("jobs_cancelled_at_shutdown")
    assert not server.lines("serve_worker_killed")


def test_a_child_that_dies_is_replaced(server: Server) -> None:
    server.start()
    first = server.wait_children(2)
    victim = min(first)

    os.kill(victim, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = {pid for pid in _children(server.pid) if _alive(pid)}
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.05)
    replaced = server.wait_children(2)
    assert victim not in replaced and len(replaced & first) == 1
    [died] = server.lines("serve_worker_died")
    assert died["pid"] == victim and died["exit_code"] == -signal.SIGKILL
    server.wait_healthy()
    assert server.stop() == 0
    assert not any(_alive(pid) for pid in replaced)


def test_a_killed_supervisor_leaves_no_child_behind(server: Server) -> None:
    server.start()
    children = server.wait_children(2)

    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)

    deadline = time.monotonic() + 30  # the kernel sent each SIGTERM: they stop gracefully
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children)


async def test_a_fresh_data_dir_is_prepared_once_before_the_children(
    openrouter: FakeOpenRouter,  # noqa: F811
    tmp_path: Path,
) -> None:
    """No database, no key file: the parent migrates, writes the key and seeds the catalog;
    the children find them made (no race between them on a first start)."""
    data_dir = tmp_path / "fresh"
    fresh = Settings(data_dir=data_dir, database_url=None, secret_keys=None)
    server = Server(fresh, openrouter, tmp_path / "fresh.log")
    server.env.pop("LUNOGEN_DATABASE_URL", None)
    server.env.pop("LUNOGEN_SECRET_KEYS", None)
    try:
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(server.wait_children, 2)
        made = {p.name for p in data_dir.iterdir() if not p.name.endswith(("-wal", "-shm"))}
        assert {"lunogen.db", "secret_keys", "ratelimits.db"} <= made
        assert (data_dir / "secret_keys").stat().st_mode & 0o777 == 0o600
        assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]
        deadline = time.monotonic() + 30  # logged once each child's sandbox probe is done
        while len(server.lines("lunogen_started")) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(server.lines("lunogen_started")) == 2
        assert not server.lines("serve_worker_died")

        from lunogen.db import create_engine, create_sessionmaker

        engine = create_engine(fresh.effective_database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                models = await session.scalar(select(func.count()).select_from(CatalogModel))
        finally:
            await engine.dispose()
        assert models == len(bundled_models())
    finally:
        exit_code = await asyncio.to_thread(server.stop)
    assert exit_code == 0


def test_serve_help_names_the_workers_default() -> None:
    from typer.testing import CliRunner

    from lunogen.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    said = " ".join(result.output.split())
    assert "--workers" in said and "one per CPU" in said


# -- the supervisor's rules, with children that do nothing but exit -----------------------------


def test_a_child_that_cannot_start_stops_every_child() -> None:
    with socket.socket() as sock:
        supervisor = serving.Supervisor(sock, 2, lambda index: serving.EXIT_START_FAILED)
        with pytest.raises(serving.ServeError, match="could not start"):
            supervisor.run()
    assert supervisor.children == {}
    assert supervisor.restarts == []


def test_children_that_keep_dying_stop_the_server() -> None:
    with socket.socket() as sock:
        supervisor = serving.Supervisor(sock, 1, lambda index: 1)
        with pytest.raises(serving.ServeError, match=r"died 6 times in 60 s"):
            supervisor.run()
    assert supervisor.children == {}
    assert len(supervisor.restarts) == serving.MAX_RESTARTS


def test_the_default_is_one_process_per_usable_cpu() -> None:
    assert serving.default_workers() == len(os.sched_getaffinity(0))


async def test_shedding_closes_only_while_over_the_share() -> None:
    shares = serving.ConnectionShares(2)
    seen: list[dict[str, object]] = []

    async def app(scope: serving.Scope, receive: serving.Receive, send: serving.Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: serving.Message) -> None:
        seen.append(dict(message))

    async def receive() -> serving.Message:
        return {"type": "http.request"}

    shed = serving.ShedExtraConnections(app, shares=shares, index=0)
    shed.connections = lambda: 3
    shares.set(1, 1)  # 3 here and 1 there: the share is 2
    await shed(dict(type="http"), receive, send)
    assert seen[0]["headers"] == [(b"a", b"b"), (b"connection", b"close")]
    assert seen[1] == {"type": "http.response.body", "body": b"ok"}
    assert shed.shedding == 0

    seen.clear()
    shares.set(1, 3)  # 3 and 3: even
    await shed(dict(type="http"), receive, send)
    assert seen[0]["headers"] == [(b"a", b"b")]
    assert shares.counts() == [3, 3]
    assert shed._publisher is not None
    shed._publisher.cancel()
