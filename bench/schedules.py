"""Schedules at scale: what 10,000 agents' schedules cost `lunogen serve` between runs, and how
late a batch of runs due at the same second fires (issue 15: "schedules for 10,000 agents cost
no CPU between runs and fire within 1 s of their time").

    .venv/bin/python bench/schedules.py              # 10,000 agents, 30 s idle windows
    .venv/bin/python bench/schedules.py --quick      # smoke run: 1,000 agents, 10 s windows
    .venv/bin/python bench/schedules.py --check      # exit 1 when a target is missed

What runs, each in a process of its own (all stopped on exit, error or Ctrl-C): the
zero-latency fake model (`bench/_support.py fake-model`), `lunogen serve` on a fresh data
directory (embedded shape: SQLite, in-process jobs), and two setup steps run as processes of
this repository's benches: `idle_agents.py populate` creates and deploys the agents through the
service layer, and `schedules.py populate` writes the schedules through the ORM (the rows the
API writes, without 10,000 HTTP round trips).

The run, in order:

1. the data dir is prepared over the CLI (migrate, catalog, an admin and a user with a key);
   a server starts; the user gets consent, the Pro plan and credits over the API; `--agents`
   agents are deployed (the user owns the first 100); server A starts afresh and, after a
   settle, its CPU over `--idle-seconds` is the baseline: the same agents, no schedule;
2. server A stops; every agent gets a daily cron schedule (in a zone, at an hour far from now:
   it never runs during the bench), and the user's agents get `--batch` one-off schedules more,
   all due at the same second, T, after the next idle window;
3. server B starts on the same data dir; after the same settle, its CPU over `--idle-seconds`
   (no run due) is the figure with schedules; then at T the batch fires, with nothing asked
   of the server for 10 s (its CPU over that span is the firing and the turns); each run's
   lateness is its start (the run row, written with the run's inbound message) minus its
   planned time, read back over the API (`GET .../schedules/{id}/runs`) afterwards, as is each
   run's turn outcome.

CPU is user + system time of the server's process tree (from /proc), never this script's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (
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
from idle_agents import AGENTS_PER_OWNER, account_setup, idle_cpu
from serve_overhead import (
    Person,
    Stack,
    _call,
    _client,
    _code,
    _environment,
    _lunogen_executable,
    prepare_data,
)

SETTLE_SECONDS = 5.0  # after healthy, before a CPU reading: start-up's own tasks finish
FIRE_WATCH_SECONDS = 10.0  # after the batch's time, before anything is read back
FIRE_MARGIN_SECONDS = 30.0  # room for server B's start on a busy machine
ANSWER_TIMEOUT_SECONDS = 120.0
CRON_ZONE = "America/New_York"

FULL = {"agents": 10_000, "idle_seconds": 30.0, "batch": 200}
QUICK = {"agents": 1_000, "idle_seconds": 10.0, "batch": 50}


FIGURES = [
    Figure("agents", "deployed agents", "", 0),
    Figure("schedules", "schedules (one per agent + the batch)", "", 0),
    Figure("populate_schedules_s", "setup: writing the schedules", "s", 1),
    Figure("idle_cpu_base_s", "server CPU over the idle window, no schedules", "s", 3),
    Figure("idle_cpu_sched_s", "server CPU over the idle window, with schedules", "s", 3),
    Figure("idle_cpu_added_s", "idle CPU added by the schedules", "s", 3),
    Figure("idle_cpu_ratio", "idle CPU with / without schedules", "x", 2),
    Figure("batch", "runs due at the same second", "", 0),
    Figure("late_p50_ms", "fire lateness p50 (run start - planned)", "ms", 1),
    Figure("late_p90_ms", "fire lateness p90", "ms", 1),
    Figure("late_max_ms", "fire lateness max (the batch's last run)", "ms", 1),
    Figure("answered", "batch runs answered by their turn", "", 0),
    Figure("answer_max_s", "planned time → last run answered", "s", 2),
    Figure(
        "fire_cpu_ms", "server CPU per run, from 1 s before the batch's time to 10 s after", "ms", 1
    ),
    Figure("load_before", "load average (1 min) before", "", 2),
    Figure("load_after", "load average (1 min) after", "", 2),
    Figure("machine_busy_pct", "machine CPU busy during the run (all processes)", "%", 0),
]

# "No CPU between runs": the idle CPU with schedules within the measuring noise (0.1 CPU-s, ten
# clock ticks over the window) of the same agents' without any.
TARGETS = {
    "idle_cpu_added_s": Target("≤ 0.10 s (noise)", lambda v: v <= 0.10),
    "late_max_ms": Target("≤ 1,000 ms", lambda v: v <= 1000),
}

SCORES = Scorecard(FIGURES, TARGETS)


@dataclass
class Run:
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the schedule setup step (its own process: `schedules.py populate`) --------------------------


async def populate(*, user_email: str, batch: int, fire_at: datetime) -> dict[str, Any]:
    """A daily cron schedule for every live agent, and `batch` one-off schedules due at
    `fire_at` spread over the user's agents, each with its thread (the rows the API writes);
    one transaction."""
    from sqlalchemy import select

    from lunogen.account import service as accounts
    from lunogen.agent.models import Agent
    from lunogen.config import Settings
    from lunogen.db import create_engine, create_sessionmaker
    from lunogen.kit.ids import new_id
    from lunogen.kit.time import utcnow
    from lunogen.runtime.models import Thread
    from lunogen.schedule import timing
    from lunogen.schedule.models import Schedule
    from lunogen.schedule.service import CHANNEL_KEY

    settings = Settings()
    engine = create_engine(settings.effective_database_url)
    sessionmaker = create_sessionmaker(engine)
    started = time.perf_counter()
    now = utcnow()
    far_hour = (now + timedelta(hours=12)).astimezone(timing.zone(CRON_ZONE)).hour
    cron = timing.Rule(kind="cron", cron=f"0 {far_hour} * * *", timezone=CRON_ZONE)
    first = timing.next_after(cron, now)
    rows: list[Schedule] = []
    try:
        async with sessionmaker() as session:
            user = await accounts.find_by_email(session, user_email)
            if user is None:
                raise RuntimeError("the user must exist before the setup step")
            agents = (
                await session.execute(
                    select(Agent.id, Agent.owner_id)
                    .where(Agent.deleted_at.is_(None))
                    .order_by(Agent.created_at, Agent.id)
                )
            ).all()
            users = [agent_id for agent_id, owner_id in agents if owner_id == user.id]
            if not users:
                raise RuntimeError("the user has no agents")

            def schedule(agent_id: str, owner_id: str, **rule: Any) -> Schedule:
                return Schedule(
                    id=new_id(),
                    agent_id=agent_id,
                    owner_id=owner_id,
                    name="Bench schedule",
                    prompt="Scheduled check: anything new?",
                    created_at=now,
                    updated_at=now,
                    **rule,
                )

            for agent_id, owner_id in agents:
                rows.append(
                    schedule(
                        agent_id,
                        owner_id,
                        kind="cron",
                        cron=cron.cron,
                        timezone=CRON_ZONE,
                        next_run_at=first,
                    )
                )
            for n in range(batch):
                rows.append(
                    schedule(
                        users[n % len(users)],
                        user.id,
                        kind="once",
                        run_at=fire_at,
                        next_run_at=fire_at,
                    )
                )
            session.add_all(rows)
            # Each schedule's thread, as `POST .../schedules` makes it.
            session.add_all(
                Thread(
                    id=new_id(),
                    agent_id=row.agent_id,
                    owner_id=row.owner_id,
                    channel_key=CHANNEL_KEY,
                    contact=row.id,
                )
                for row in rows
            )
            await session.commit()
    finally:
        await engine.dispose()
    return {"schedules": len(rows), "seconds": time.perf_counter() - started}


def run_populate_agents(stack: Stack, agents: int, admin: Person, user: Person) -> None:
    """`idle_agents.py populate`: the agents, created and deployed through the services."""
    argv = [
        sys.executable,
        str(Path(__file__).resolve().with_name("idle_agents.py")),
        "populate",
        "--agents",
        str(agents),
        "--user-email",
        user.email,
        "--user-agents",
        str(min(agents, AGENTS_PER_OWNER)),
        "--admin-email",
        admin.email,
    ]
    done = subprocess.run(argv, env=stack.env, cwd=stack.run_dir, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the agents' setup step failed (exit {done.returncode})")


def run_populate_schedules(
    stack: Stack, user: Person, batch: int, fire_at: datetime
) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "populate",
        "--user-email",
        user.email,
        "--batch",
        str(batch),
        "--fire-at",
        fire_at.isoformat(),
    ]
    done = subprocess.run(
        argv, env=stack.env, cwd=stack.run_dir, stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the schedules' setup step failed (exit {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- reading the batch back over the API ---------------------------------------------------------


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def batch_runs(url: str, user: Person) -> list[dict[str, Any]]:
    """Every run of the user's one-off schedules (the batch), over the API."""
    found: list[dict[str, Any]] = []
    async with _client(url) as http:
        offset = 0
        agent_ids: list[str] = []
        while True:
            page = await _call(
                http, "GET", f"/api/v1/agents?limit=100&offset={offset}", user.key, 200
            )
            agent_ids += [str(a["id"]) for a in page["data"]]
            if len(page["data"]) < 100:
                break
            offset += 100
        for agent_id in agent_ids:
            path = f"/api/v1/agents/{agent_id}/schedules"
            response = await http.get(path, headers={"Authorization": f"Bearer {user.key}"})
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status_code}")
            for schedule in response.json():
                if schedule["kind"] != "once":
                    continue
                runs = await _call(http, "GET", f"{path}/{schedule['id']}/runs", user.key, 200)
                found += runs["data"]
    return found


async def wait_for_batch(
    url: str, user: Person, batch: int, deadline: float
) -> list[dict[str, Any]]:
    """The batch's runs once each has fired and its turn ended (or the deadline passed)."""
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = await batch_runs(url, user)
        if len(runs) >= batch and all(r["outcome"] != "pending" for r in runs):
            return runs
        await asyncio.sleep(1.0)
    return runs


async def last_answer(url: str, user: Person) -> datetime | None:
    """When the last reply on the user's schedule threads was written (over the API)."""
    latest: datetime | None = None
    async with _client(url) as http:
        agents = await _call(http, "GET", "/api/v1/agents?limit=100", user.key, 200)
        for agent in agents["data"]:
            listed = await _call(
                http, "GET", f"/api/v1/agents/{agent['id']}/threads", user.key, 200
            )
            for thread in listed["data"]:
                if thread.get("channel") != "schedule":
                    continue
                messages = await _call(
                    http,
                    "GET",
                    f"/api/v1/agents/{agent['id']}/threads/{thread['id']}/messages",
                    user.key,
                    200,
                )
                for message in messages["data"]:
                    if message["role"] == "assistant":
                        written = _time(message["created_at"])
                        latest = written if latest is None or written > latest else latest
    return latest


# -- the run -------------------------------------------------------------------------------------


def _run(work: Any) -> Any:
    return asyncio.run(work)


def measure(options: argparse.Namespace, say: Progress) -> Run:
    with run_directory("lunogen-schedules-bench-", keep=options.keep, say=say) as run_dir:
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
        stack = Stack(processes, _lunogen_executable(), run_dir, env, port)
        try:
            say("preparing the data dir: db upgrade, models refresh, users, keys (CLI)")
            admin, user, _migrate = prepare_data(stack)
            say("a server: starting (account setup)")
            stack.start_server(options)
            _run(account_setup(stack.url, admin, user))
            say(f"setup: {options.agents:,} agents, created and deployed through the services")
            run_populate_agents(stack, options.agents, admin, user)
            assert stack.server is not None
            processes.stop(stack.server)
            # Both idle windows are measured on a fresh server, the same time after healthy.
            say("server A: restarting (the agents, no schedule)")
            stack.start_server(options)
            time.sleep(SETTLE_SECONDS)
            say(f"server A: idle for {options.idle_seconds:g} s")
            figures["idle_cpu_base_s"] = idle_cpu(stack, options.idle_seconds)
            assert stack.server is not None
            processes.stop(stack.server)

            fire_at = datetime.now(UTC) + timedelta(
                seconds=options.idle_seconds + SETTLE_SECONDS + FIRE_MARGIN_SECONDS
            )
            fire_at = fire_at.replace(microsecond=0)
            say(
                f"setup: a schedule per agent, and {options.batch} runs due at "
                f"{fire_at:%H:%M:%S} UTC"
            )
            written = run_populate_schedules(stack, user, options.batch, fire_at)
            figures["schedules"] = written["schedules"]
            figures["populate_schedules_s"] = written["seconds"]

            say("server B: starting (with the schedules)")
            stack.start_server(options)
            time.sleep(SETTLE_SECONDS)
            say(f"server B: idle for {options.idle_seconds:g} s (no run due)")
            window_start = datetime.now(UTC)
            figures["idle_cpu_sched_s"] = idle_cpu(stack, options.idle_seconds)
            if datetime.now(UTC) >= fire_at - timedelta(seconds=1):
                raise RuntimeError(
                    f"the idle window ({window_start:%H:%M:%S}) ran into the batch's time"
                )
            wait = (fire_at - datetime.now(UTC)).total_seconds() - 1.0
            say(f"waiting {wait:.1f} s for the batch, then {FIRE_WATCH_SECONDS:g} s untouched")
            time.sleep(max(wait, 0.0))
            # Nothing is asked of the server while the batch fires: its CPU over the span is
            # the firing and the turns alone.
            cpu_before = stack.cpu()
            time.sleep(1.0 + FIRE_WATCH_SECONDS)
            cpu_fired = stack.cpu() - cpu_before
            runs = _run(
                wait_for_batch(
                    stack.url, user, options.batch, time.monotonic() + ANSWER_TIMEOUT_SECONDS
                )
            )
            answered_at = _run(last_answer(stack.url, user))
        except Exception:
            print(stack.logs(), file=sys.stderr)
            raise
        say("stopping")

    if len(runs) < options.batch:
        raise RuntimeError(f"only {len(runs)} of {options.batch} runs fired")
    late = [(_time(r["started_at"]) - _time(r["planned_at"])).total_seconds() for r in runs]
    figures["agents"] = options.agents
    figures["batch"] = len(runs)
    figures["late_p50_ms"] = 1000 * percentile(late, 50)
    figures["late_p90_ms"] = 1000 * percentile(late, 90)
    figures["late_max_ms"] = 1000 * max(late)
    figures["answered"] = sum(1 for r in runs if r["outcome"] == "done")
    if answered_at is not None:
        figures["answer_max_s"] = (answered_at - fire_at).total_seconds()
    figures["fire_cpu_ms"] = 1000 * cpu_fired / len(runs)
    figures["idle_cpu_added_s"] = figures["idle_cpu_sched_s"] - figures["idle_cpu_base_s"]
    figures["idle_cpu_ratio"] = figures["idle_cpu_sched_s"] / max(figures["idle_cpu_base_s"], 0.01)
    figures["load_after"] = load_average()
    figures["machine_busy_pct"] = MachineCpu.now().busy_percent_since(machine_before)
    skipped = [r for r in runs if r["status"] != "started"]
    run.notes.append(
        f"batch: {len(runs)} runs, {len(skipped)} skipped; lateness min "
        f"{1000 * min(late):.1f} ms; the fire CPU includes the runs' turns (fake model, "
        "0 ms latency)"
    )
    return run


# -- report and options --------------------------------------------------------------------------


def _describe(options: argparse.Namespace) -> list[str]:
    return [
        f"Schedules: {options.agents:,} agents with a schedule each in lunogen serve (SQLite)",
        "machine: " + ", ".join(f"{k} {v}" for k, v in machine_facts().items()),
        f"code: {_code(options)}",
        f"settings: idle windows {options.idle_seconds:g} s, a batch of {options.batch} runs "
        "due at the same second",
    ]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="What schedules cost lunogen serve between runs, and how late they fire."
    )
    parser.add_argument("--agents", type=int, help="deployed agents, each with a schedule")
    parser.add_argument("--idle-seconds", type=float, help="length of each idle window")
    parser.add_argument("--batch", type=int, help="runs due at the same second")
    parser.add_argument("--quick", action="store_true", help="smoke run; targets not gated")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--src", metavar="DIR", help="run the lunogen package of DIR/src")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and the logs")
    options = parser.parse_args(argv)
    for key, value in (QUICK if options.quick else FULL).items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    if options.agents < 1 or options.batch < 1:
        parser.error("--agents and --batch must be positive")
    options.scaled = False  # what serve_overhead's Stack and environment read
    options.workers = 1
    return options


def _populate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="schedules.py populate")
    parser.add_argument("--user-email", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--fire-at", required=True)
    options = parser.parse_args(argv)
    done = asyncio.run(
        populate(
            user_email=options.user_email,
            batch=options.batch,
            fire_at=datetime.fromisoformat(options.fire_at),
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
    SCORES.print(run.figures, run.notes, width=52)
    missed = SCORES.misses(run.figures)
    if options.json:
        payload = {"description": description, "figures": run.figures, "notes": run.notes}
        Path(options.json).write_text(json.dumps(payload, indent=2) + "\n")
    return conclude(missed, len(TARGETS), quick=options.quick, check=options.check)


if __name__ == "__main__":
    run_main(main)
