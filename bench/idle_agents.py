"""Idle agents: what deployed agents with no traffic cost `lunogen serve` (issue 11, item 5).

    .venv/bin/python bench/idle_agents.py                 # 100,000 agents (~8-12 minutes)
    .venv/bin/python bench/idle_agents.py --quick         # CI smoke run: 2,000 agents, 10 s idle
    .venv/bin/python bench/idle_agents.py --check         # exit 1 when a target is missed
    .venv/bin/python bench/idle_agents.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/lg_idle

What runs, each in a process of its own (all stopped on exit, error or Ctrl-C): the zero-latency
fake model (`bench/_support.py fake-model`), `lunogen serve` on a fresh data directory (SQLite;
PostgreSQL with `--database-url`, Redis too with `--redis-url`), and the setup step, this script
run as `idle_agents.py populate`, which creates and deploys the agents through the service
layer (`agent.service.create_agent`, `agent.lifecycle.deploy`: the rows production writes, with
their audit and log rows), one owner of 100 agents (the Pro plan's limit) per transaction.

The run, in order:

1. the data dir is prepared over the CLI (migrate, catalog, an admin and a user with a key);
   server A starts with no agents; its RSS once healthy is the empty figure; the user gets
   consent, the Pro plan and credits over the API; server A's CPU over `--idle-seconds` idle
   seconds is the empty idle figure;
2. the setup step deploys `--agents` agents while server A runs (the user owns the first
   `--cold + 1` of them, the rest belong to one owner per 100); the database's size is read
   before and after, table by table (SQLite `dbstat`, PostgreSQL `pg_total_relation_size`),
   and server A's RSS before and after (the same process, with the agents in its database);
3. server A stops and server B starts on the same data dir: its RSS once healthy is the full
   figure (a server starting with every agent deployed), its CPU over `--idle-seconds` the
   full idle figure;
4. first messages to cold agents: `--cold` rounds, each a message to an agent no message has
   reached since server B started and one to the warm agent (warmed up before), in alternating
   order, each to a new contact (so both open a new thread); cold extra = cold p50 - warm p50;
   the server's RSS is read once more after them.

The setup costs ~3 ms of CPU per agent (two service calls, ~12 statements through the ORM), so
100,000 agents take 5-7 minutes on an idle 2-core machine, more when it is busy: the setup's
rate and CPU per agent are printed with the figures.

Memory is the VmRSS of the server's process tree. CPU is user + system time of that tree (from
/proc), so this script's own work never counts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (
    FAKE_MODEL_ID,
    Figure,
    MachineCpu,
    Processes,
    Progress,
    Scorecard,
    Target,
    conclude,
    exit_on_sigterm,
    free_port,
    load_average,
    machine_facts,
    percentile,
    run_directory,
    run_main,
    start_fake_model,
)
from serve_overhead import (
    CREDITS,
    INSTRUCTIONS,
    Person,
    Stack,
    _call,
    _client,
    _code,
    _consent,
    _environment,
    _lunogen_executable,
    prepare_data,
)

T = TypeVar("T")
MB = 1_000_000
MIB = 1024 * 1024
AGENTS_PER_OWNER = 100  # the Pro plan's limit: one owner (and one transaction) per 100 agents
OWNER_DOMAIN = "idle-bench.example.com"
SETTLE_SECONDS = 3.0  # after healthy, before a memory reading: start-up's own tasks finish
WARMUP_MESSAGES = 10
SETUP_CACHE_KIB = 512 * 1024  # the setup step's SQLite page cache

FULL = {"agents": 100_000, "idle_seconds": 60.0, "cold": 50}
QUICK = {"agents": 2_000, "idle_seconds": 10.0, "cold": 10}


# -- figures and targets -------------------------------------------------------------------------


FIGURES = [
    Figure("agents", "deployed agents", "", 0),
    Figure("setup_s", "setup: create + deploy through the service layer", "s", 1),
    Figure("setup_rate", "setup: agents per second", "/s", 0),
    Figure("setup_cpu_ms", "setup: CPU per agent (its process)", "ms", 2),
    Figure("healthy_empty_s", "start → healthy, 0 agents", "s", 2),
    Figure("healthy_full_s", "start → healthy, N agents", "s", 2),
    Figure("rss_empty_mib", "server RSS, fresh, 0 agents", "MiB", 1),
    Figure("rss_same_added_mb", "RSS added in the same process by the setup", "MB", 1),
    Figure("rss_full_mib", "server RSS, fresh, N agents", "MiB", 1),
    Figure("rss_added_mb", "RSS added by N agents (fresh vs fresh)", "MB", 1),
    Figure("rss_added_mb_100k", "RSS added per 100,000 agents", "MB", 1),
    Figure("rss_messaged_mib", "server RSS after the cold and warm messages", "MiB", 1),
    Figure("db_bytes_per_agent", "database bytes per agent", "B", 0),
    Figure("db_added_mb", "database growth", "MB", 1),
    Figure("idle_cpu_empty_s", "server CPU over the idle window, 0 agents", "s", 2),
    Figure("idle_cpu_full_s", "server CPU over the idle window, N agents", "s", 2),
    Figure("idle_cpu_added_s", "idle CPU added by N agents", "s", 2),
    Figure("warm_p50_ms", "message to a warm agent, p50", "ms", 2),
    Figure("cold_p50_ms", "first message to a cold agent, p50", "ms", 2),
    Figure("cold_added_ms", "cold extra (cold p50 - warm p50)", "ms", 2),
    Figure("cold_p90_ms", "first message to a cold agent, p90", "ms", 2),
    Figure("warm_p90_ms", "message to a warm agent, p90", "ms", 2),
    Figure("load_before", "load average (1 min) before", "", 2),
    Figure("load_after", "load average (1 min) after", "", 2),
    Figure("machine_busy_pct", "machine CPU busy during the run (all processes)", "%", 0),
]


# "No CPU while idle": the server's idle CPU with N agents within the measuring noise (0.1
# CPU-s, ten clock ticks over the window) of the same server's with none.
TARGETS = {
    "rss_added_mb_100k": Target("≤ 100 MB", lambda v: v <= 100),
    "db_bytes_per_agent": Target("≤ 5,000 B", lambda v: v <= 5000),
    "idle_cpu_added_s": Target("≤ 0.10 s (noise)", lambda v: v <= 0.10),
    "cold_added_ms": Target("≤ 5 ms", lambda v: v <= 5),
}


SCORES = Scorecard(FIGURES, TARGETS)


@dataclass
class Run:
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the setup step (its own process: `idle_agents.py populate`) ---------------------------------


async def populate(
    *, agents: int, user_email: str, user_agents: int, admin_email: str, say: Progress
) -> dict[str, Any]:
    """Create and deploy `agents` agents through the service layer: `user_agents` of them owned
    by `user_email`, the rest by new Pro owners of 100 each, one transaction per owner."""
    from lunogen.account import service as accounts
    from lunogen.account.models import User
    from lunogen.agent import lifecycle, schemas
    from lunogen.agent import service as agent_service
    from lunogen.config import Settings
    from lunogen.db import create_engine, create_sessionmaker
    from lunogen.kit.crypto import load_keyring
    from lunogen.kit.logging import configure_logging
    from lunogen.kit.web import ClientInfo
    from lunogen.llm import catalog

    try:  # where issue 11 moves them (older trees: with the lifecycle and the dependencies)
        from lunogen.auth.principal import Principal
        from lunogen.kit.effects import Effects
    except ImportError:
        from lunogen.agent.lifecycle import Effects
        from lunogen.auth.dependencies import Principal

    configure_logging("WARNING", json=True)  # the server's log is the one at INFO
    gc.freeze()  # what the imports made is never garbage: no collection walks it again
    settings = Settings()
    effects = Effects(
        settings=settings, keyring=load_keyring(settings.secret_keys, settings.data_dir)
    )
    client = ClientInfo(ip="127.0.0.1", user_agent="idle_agents bench")
    engine = create_engine(settings.effective_database_url)
    if settings.effective_database_url.startswith("sqlite"):
        _sqlite_for_bulk(engine)
    sessionmaker = create_sessionmaker(engine)
    data = schemas.AgentCreate(name="Idle agent", model=FAKE_MODEL_ID, instructions=INSTRUCTIONS)
    created = 0
    started = time.perf_counter()
    report_every = max(AGENTS_PER_OWNER, agents // 20)
    try:
        async with sessionmaker() as session:
            admin = await accounts.find_by_email(session, admin_email)
            user = await accounts.find_by_email(session, user_email)
            if admin is None or user is None:
                raise RuntimeError("the admin and the user must exist before the setup step")
            admin_id, user_id = admin.id, user.id
        owner_number = 0
        while created < agents:
            count = min(agents - created, user_agents if created == 0 else AGENTS_PER_OWNER)
            async with sessionmaker() as session:
                if created == 0:
                    owner = await session.get(User, user_id)
                    assert owner is not None
                else:
                    owner_number += 1
                    owner = await accounts.create_user_admin(
                        session,
                        email=f"owner-{os.getpid()}-{owner_number}@{OWNER_DOMAIN}",
                        name=f"Owner {owner_number}",
                        password=None,
                        role="user",
                    )
                    await accounts.change_role_or_plan(
                        session,
                        actor_id=admin_id,
                        actor_key_id=None,
                        user_id=owner.id,
                        role=None,
                        plan="pro",
                        client=client,
                    )
                # Held, so that the session's identity map keeps the model between agents
                # (it keeps only weak references): the checks of every agent read it.
                catalog_model = await catalog.get_model(session, FAKE_MODEL_ID)
                if catalog_model is None:
                    raise RuntimeError(f"{FAKE_MODEL_ID} is not in the catalog")
                principal = Principal(user=owner, client=client)
                for _ in range(count):
                    agent, _revealed = await agent_service.create_agent(
                        session, principal=principal, data=data, keyring=effects.keyring
                    )
                    _deployed, problem = await lifecycle.deploy(
                        session, owner_id=owner.id, agent_id=agent.id, effects=effects
                    )
                    if problem is not None:
                        raise RuntimeError(f"deploy failed: {problem}")
                await session.commit()
            gc.collect()  # the transaction's objects; the process's own were frozen at start
            before, created = created, created + count
            if created // report_every != before // report_every or created == agents:
                if not settings.effective_database_url.startswith("sqlite"):
                    await _analyze(engine)
                elapsed = time.perf_counter() - started
                say(f"  {created:,}/{agents:,} agents deployed ({created / elapsed:,.0f}/s)")
    finally:
        await engine.dispose()
    return {"agents": created, "owners": owner_number, "seconds": time.perf_counter() - started}


async def _analyze(engine: Any) -> None:
    """What autovacuum does as tables grow (were it off, as on some test servers, every agent
    lookup would scan the whole table: the planner would still think it empty)."""
    from sqlalchemy import text

    async with engine.connect() as connection:
        await connection.execute(text("ANALYZE"))
        await connection.commit()


def _sqlite_for_bulk(engine: Any) -> None:
    """Changes to how this process talks to SQLite, none to what it writes: the page cache
    holds the growing indexes (random ids land anywhere in them) instead of SQLite's default
    2 MiB; and on a tree whose engine still drives aiosqlite (before `kit/sqlite_inline.py`),
    its calls run on the event loop's thread instead of going to the connection's thread and
    back (about 40 hand-offs per agent)."""
    from sqlalchemy import event

    @event.listens_for(engine.sync_engine, "connect")
    def _big_cache(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA cache_size=-{SETUP_CACHE_KIB}")
        cursor.close()

    if importlib.util.find_spec("lunogen.kit.sqlite_inline") is not None:
        return  # the engine runs SQLite's calls inline already
    from aiosqlite import core

    @event.listens_for(engine.sync_engine, "do_connect")
    def _any_thread(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        params["check_same_thread"] = False

    async def inline(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    core.Connection._execute = inline  # type: ignore[method-assign]


# -- the database's size, table by table ---------------------------------------------------------


def table_bytes(database_url: str) -> dict[str, int]:
    """Bytes of each table with its indexes (and, on PostgreSQL, its TOAST)."""
    if database_url.startswith("sqlite"):
        return _sqlite_table_bytes(database_url.split("///", 1)[1])
    return asyncio.run(_postgres_table_bytes(database_url))


def _sqlite_table_bytes(path: str) -> dict[str, int]:
    """Pages in use (free pages excluded), read through the WAL, per table with its indexes."""
    with sqlite3.connect(path, timeout=60) as db:
        owners = dict(db.execute("SELECT name, tbl_name FROM sqlite_schema"))
        sizes: dict[str, int] = {}
        for name, size in db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owners.get(name, name)
            sizes[table] = sizes.get(table, 0) + int(size)
    return sizes


async def _postgres_table_bytes(database_url: str) -> dict[str, int]:
    from sqlalchemy import text

    from lunogen.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("ANALYZE"))
            rows = await connection.execute(
                text(
                    "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                    "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
                )
            )
            return {str(name): int(size) for name, size in rows}
    finally:
        await engine.dispose()


# -- the run -------------------------------------------------------------------------------------


def _database_url(options: argparse.Namespace, stack: Stack) -> str:
    if options.database_url:
        return str(options.database_url)
    return f"sqlite+aiosqlite:///{(stack.data_dir / 'lunogen.db').resolve()}"


def run_populate(
    stack: Stack, options: argparse.Namespace, people: tuple[Person, Person]
) -> dict[str, Any]:
    """The setup step, in a process of its own with the server's environment."""
    admin, user = people
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "populate",
        "--agents",
        str(options.agents),
        "--user-email",
        user.email,
        "--user-agents",
        str(min(options.agents, options.cold + 1)),
        "--admin-email",
        admin.email,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        argv, env=stack.env, cwd=stack.run_dir, stdout=subprocess.PIPE, text=True, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"the setup step failed (exit {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def idle_cpu(stack: Stack, seconds: float) -> float:
    """The server's CPU seconds over `seconds` with nothing sent to it."""
    before = stack.cpu()
    time.sleep(seconds)
    return stack.cpu() - before


def settled_rss(stack: Stack) -> int:
    time.sleep(SETTLE_SECONDS)
    return stack.rss()


async def account_setup(url: str, admin: Person, user: Person) -> None:
    """Consent for both, the Pro plan (100 agents) and credits for the user; over the API."""
    async with _client(url) as http:
        for person in (admin, user):
            await _consent(url, person)
        user_id = str((await _call(http, "GET", "/api/v1/me", user.key, 200))["id"])
        plan = {"plan": "pro"}
        await _call(http, "PATCH", f"/api/v1/admin/users/{user_id}", admin.key, 200, plan)
        grant = {"credits": str(CREDITS), "reason": "idle_agents benchmark"}
        path = f"/api/v1/admin/accounts/{user_id}/credits"
        await _call(http, "POST", path, admin.key, 201, grant)


async def users_agents(url: str, user: Person) -> list[str]:
    """The user's agents, oldest first (the setup step created them)."""
    found: list[tuple[str, str]] = []
    async with _client(url) as http:
        offset = 0
        while True:
            page = await _call(
                http, "GET", f"/api/v1/agents?limit=100&offset={offset}", user.key, 200
            )
            rows = page.get("data", [])
            found += [(str(a["created_at"]), str(a["id"])) for a in rows]
            if len(rows) < 100:
                break
            offset += 100
    return [agent_id for _, agent_id in sorted(found)]


async def message(http: httpx.AsyncClient, key: str, agent_id: str, contact: str) -> float:
    started = time.perf_counter()
    response = await http.post(
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": f"Hello from {contact}", "contact": contact},
        headers={"Authorization": f"Bearer {key}"},
    )
    elapsed = time.perf_counter() - started
    status = response.json().get("status") if response.status_code == 200 else None
    if status != "answered":
        raise RuntimeError(f"no answer: HTTP {response.status_code} {response.text[:500]}")
    return elapsed


async def cold_and_warm(
    url: str, user: Person, agent_ids: list[str], rounds: int
) -> tuple[list[float], list[float]]:
    """Warm the first agent up, then `rounds` rounds of one first message to a cold agent and
    one message to the warm agent, in alternating order; every message to a new contact."""
    warm, cold_agents = agent_ids[0], agent_ids[1 : rounds + 1]
    cold: list[float] = []
    warmed: list[float] = []
    async with _client(url) as http:
        for n in range(WARMUP_MESSAGES):
            await message(http, user.key, warm, f"warm-up-{n}")
        for n, cold_agent in enumerate(cold_agents):
            sides = [(cold_agent, cold), (warm, warmed)]
            if n % 2:
                sides.reverse()
            for agent_id, into in sides:
                into.append(await message(http, user.key, agent_id, f"round-{n}"))
    return cold, warmed


def measure(options: argparse.Namespace, say: Progress) -> Run:
    with run_directory("lunogen-idle-bench-", keep=options.keep, say=say) as run_dir:
        return _measure_in(run_dir, options, say)


def _measure_in(run_dir: Path, options: argparse.Namespace, say: Progress) -> Run:
    run = Run()
    figures = run.figures
    figures["load_before"] = load_average()
    machine_before = MachineCpu.now()
    with Processes() as processes:
        say("starting the fake model")
        model_url = start_fake_model(processes, 0.0, run_dir / "model.log")
        port = free_port()
        env = _environment(options, run_dir, port, model_url)
        if options.database_url:
            env["LUNOGEN_DATABASE_URL"] = options.database_url
        if options.redis_url:
            env["LUNOGEN_REDIS_URL"] = options.redis_url
            env["LUNOGEN_JOB_QUEUE"] = f"lunogen:bench-idle:{os.getpid()}:{port}"
        stack = Stack(processes, _lunogen_executable(), run_dir, env, port)
        database_url = _database_url(options, stack)
        try:
            say("preparing the data dir: db upgrade, models refresh, users, keys (CLI)")
            admin, user, _migrate = prepare_data(stack)

            say("server A (0 agents): starting")
            figures["healthy_empty_s"] = stack.start_server(options)
            rss_empty = settled_rss(stack)
            say(
                f"  healthy after {figures['healthy_empty_s']:.2f} s, RSS {rss_empty / MIB:.1f} MiB"
            )
            _run(account_setup(stack.url, admin, user))
            time.sleep(SETTLE_SECONDS)
            say(f"  idle for {options.idle_seconds:g} s (0 agents)")
            figures["idle_cpu_empty_s"] = idle_cpu(stack, options.idle_seconds)
            rss_before_setup = stack.rss()

            sizes_before = table_bytes(database_url)
            say(f"  database: {sum(sizes_before.values()) / MB:,.1f} MB in use")
            say(f"setup: {options.agents:,} agents, created and deployed through the services")
            setup = run_populate(stack, options, (admin, user))
            figures["setup_s"] = float(setup["seconds"])
            figures["setup_rate"] = setup["agents"] / setup["seconds"]
            figures["setup_cpu_ms"] = 1000 * setup["cpu_seconds"] / setup["agents"]
            say("  reading the database's size, table by table")
            sizes_after = table_bytes(database_url)
            say(f"  database: {sum(sizes_after.values()) / MB:,.1f} MB in use")
            rss_same = settled_rss(stack)

            say("server B (N agents): restarting")
            assert stack.server is not None
            processes.stop(stack.server)
            figures["healthy_full_s"] = stack.start_server(options)
            rss_full = settled_rss(stack)
            say(f"  healthy after {figures['healthy_full_s']:.2f} s, RSS {rss_full / MIB:.1f} MiB")
            say(f"  idle for {options.idle_seconds:g} s ({options.agents:,} agents)")
            figures["idle_cpu_full_s"] = idle_cpu(stack, options.idle_seconds)

            say(f"first messages: {options.cold} cold agents against the warm one, interleaved")
            agent_ids = _run(users_agents(stack.url, user))
            if len(agent_ids) < options.cold + 1:
                raise RuntimeError(f"the user has {len(agent_ids)} agents, not {options.cold + 1}")
            cold, warm = _run(cold_and_warm(stack.url, user, agent_ids, options.cold))
            rss_messaged = stack.rss()
        except Exception:
            print(stack.logs(), file=sys.stderr)
            raise
        say("stopping")

    agents = int(setup["agents"])
    figures["agents"] = agents
    figures["rss_empty_mib"] = rss_empty / MIB
    figures["rss_same_added_mb"] = (rss_same - rss_before_setup) / MB
    figures["rss_messaged_mib"] = rss_messaged / MIB
    figures["rss_full_mib"] = rss_full / MIB
    figures["rss_added_mb"] = (rss_full - rss_empty) / MB
    figures["rss_added_mb_100k"] = figures["rss_added_mb"] * 100_000 / agents
    added = {t: sizes_after.get(t, 0) - sizes_before.get(t, 0) for t in sizes_after}
    figures["db_added_mb"] = sum(added.values()) / MB
    figures["db_bytes_per_agent"] = sum(added.values()) / agents
    figures["idle_cpu_added_s"] = figures["idle_cpu_full_s"] - figures["idle_cpu_empty_s"]
    figures["warm_p50_ms"] = percentile(warm, 50) * 1000
    figures["cold_p50_ms"] = percentile(cold, 50) * 1000
    figures["warm_p90_ms"] = percentile(warm, 90) * 1000
    figures["cold_p90_ms"] = percentile(cold, 90) * 1000
    figures["cold_added_ms"] = figures["cold_p50_ms"] - figures["warm_p50_ms"]
    figures["load_after"] = load_average()
    figures["machine_busy_pct"] = MachineCpu.now().busy_percent_since(machine_before)
    run.notes.append(
        f"setup: {agents:,} agents of {int(setup['owners']) + 1:,} owners in "
        f"{figures['setup_s']:.1f} s"
    )
    grown = sorted(((b, t) for t, b in added.items() if b > 0), reverse=True)
    run.notes.append(
        "database bytes per agent by table (with its indexes): "
        + ", ".join(f"{t} {b / agents:,.0f}" for b, t in grown)
    )
    return run


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on uvloop when it is installed (as `lunogen serve` does), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


# -- report --------------------------------------------------------------------------------------


def print_run(run: Run) -> None:
    SCORES.print(run.figures, run.notes, width=48)


def _describe(options: argparse.Namespace) -> list[str]:
    shape = "SQLite"
    if options.database_url:
        shape = "PostgreSQL" + (" + Redis" if options.redis_url else "")
    return [
        f"Idle agents: {options.agents:,} deployed agents in lunogen serve ({shape})",
        "machine: " + ", ".join(f"{k} {v}" for k, v in machine_facts().items()),
        f"code: {_code(options)}",
        f"settings: idle window {options.idle_seconds:g} s, {options.cold} cold agents, "
        f"{WARMUP_MESSAGES} warm-up messages",
    ]


# -- options -------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="What deployed idle agents cost lunogen serve: RSS, database bytes, CPU "
        "while idle, and the first message to a cold agent.",
        epilog="Defaults: "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in FULL.items())
        + ". --quick: "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
        + ". Options given explicitly win over both.",
    )
    parser.add_argument("--agents", type=int, help="deployed agents to create")
    parser.add_argument("--idle-seconds", type=float, help="length of each idle window")
    parser.add_argument("--cold", type=int, help=f"cold agents messaged (1-{AGENTS_PER_OWNER - 1})")
    parser.add_argument("--quick", action="store_true", help="smoke run; targets not gated")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--database-url", help="PostgreSQL (postgresql+asyncpg://...): an empty database of its own"
    )
    parser.add_argument("--redis-url", help="Redis for jobs (with --database-url)")
    parser.add_argument("--src", metavar="DIR", help="run the lunogen package of DIR/src")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and the logs")
    options = parser.parse_args(argv)
    for key, value in (QUICK if options.quick else FULL).items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    if not 1 <= options.cold < AGENTS_PER_OWNER:
        parser.error(f"--cold must be between 1 and {AGENTS_PER_OWNER - 1}")
    if options.agents < options.cold + 1:
        parser.error("--agents must be more than --cold")
    if options.redis_url and not options.database_url:
        parser.error("--redis-url needs --database-url")
    # What serve_overhead's Stack and environment read.
    options.scaled = False
    options.workers = 1
    return options


def _populate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="idle_agents.py populate")
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--user-email", required=True)
    parser.add_argument("--user-agents", type=int, required=True)
    parser.add_argument("--admin-email", required=True)
    options = parser.parse_args(argv)
    gc.disable()  # collected after each transaction instead (see populate)
    done = _run(
        populate(
            agents=options.agents,
            user_email=options.user_email,
            user_agents=options.user_agents,
            admin_email=options.admin_email,
            say=Progress(),
        )
    )
    print(json.dumps(done), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["populate"]:
        return _populate_main(argv[1:])
    options = parse(argv)
    exit_on_sigterm()
    say = Progress()
    description = _describe(options)
    for line in description:
        say(line)
    run = measure(options, say)
    print("\n".join(description))
    print_run(run)
    missed = SCORES.misses(run.figures)
    if options.json:
        payload = {
            "description": description,
            "options": {k: v for k, v in vars(options).items() if k != "database_url"},
            "figures": run.figures,
            "notes": run.notes,
            "missed": missed,
        }
        Path(options.json).write_text(json.dumps(payload, indent=2) + "\n")
    return conclude(missed, len(TARGETS), quick=options.quick, check=options.check)


if __name__ == "__main__":
    run_main(main)
