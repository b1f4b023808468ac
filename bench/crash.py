"""Kill -9 under load: the process that runs the turns is SIGKILLed mid-turn, then restarted.

    .venv/bin/python bench/crash.py                       # embedded: lunogen serve on SQLite
    .venv/bin/python bench/crash.py --rounds 3 --check    # three kills; exit 1 on a miss
    .venv/bin/python bench/crash.py \
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/lg_crash \
        --redis-url redis://127.0.0.1:6379/9                # scaled: the worker is killed

What runs, each in a process of its own (all stopped on exit, error or Ctrl-C):

- the fake model of `bench/_support.py`, slowed down (`--model-latency-ms`, default 400) and
  asking for `--tool-steps` tool calls (default 2) before it answers, so that a turn makes
  several model calls and a kill lands between and during them; it counts the calls it receives;
- `lunogen serve` on a fresh data directory (embedded shape: SQLite, in-process jobs); with
  `--database-url` and `--redis-url` the scaled shape instead: `lunogen serve --no-worker` plus
  `--worker-processes` `lunogen worker` processes.

The account is made as `bench/serve_overhead.py` makes it (CLI, then the API), with an agent
that has the `--tool` tool (default `remember`). `--in-flight` messages (default 20), one per
contact so that every one is a turn of its own thread, are posted at once with `wait_seconds=0`
(each answers 202). When the fake has received half of the calls the turns will make, the
process that runs the turns (`lunogen serve`, or every `lunogen worker`) and its process group
get SIGKILL: no clean-up, its thread leases stay behind. It is started again on the same data
(the turn lease is `--lease-seconds`, so the sweeper of the new process finds the threads once
the dead one's leases run out). `--rounds N` kills N times, each time once the process started
last has made 1/(k+1) of the calls the unanswered turns still need (k: the kills left). Then
the bench waits until every message is answered (polling the thread messages over the API) and
reports:

- lost: messages with no reply (still pending, or failed);
- duplicated: messages with more than one reply;
- charged twice: (message, step) pairs with more than one usage charge in the credit ledger
  (its keys are `usage:<message>:<step>:<fingerprint>`), and the charges beyond one per pair;
- the model calls the fake received against the calls charged (the difference is what the kills
  cost the operator: calls in flight when a process died, made again by the next attempt);
- `lunogen billing verify`: its exit code and output.

`--check` exits 1 unless nothing is lost, duplicated or charged twice and the ledger verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (
    FAKE_MODEL_ID,
    Processes,
    Progress,
    exit_on_sigterm,
    free_port,
    load_average,
    machine_facts,
    run_directory,
    run_main,
    start_fake_model,
)
from serve_overhead import (
    Person,
    Stack,
    _call,
    _client,
    _consent,
    _environment,
    _git_state,
    _lunogen_executable,
    prepare_data,
)

CREDITS = 1_000_000
ANSWER_TIMEOUT_SECONDS = 180.0
KILL_TIMEOUT_SECONDS = 120.0
POLL_SECONDS = 0.25


# -- the account and the messages ---------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    key: str
    user_id: str
    agent_id: str


async def provision(http: httpx.AsyncClient, admin: Person, user: Person, tool: str) -> Account:
    """Consent, the Pro plan and credits, and a deployed agent with `tool`; over the API."""
    for person in (admin, user):
        await _consent(str(http.base_url), person)
    user_id = str((await _call(http, "GET", "/api/v1/me", user.key, 200))["id"])
    await _call(http, "PATCH", f"/api/v1/admin/users/{user_id}", admin.key, 200, {"plan": "pro"})
    grant = {"credits": str(CREDITS), "reason": "crash benchmark"}
    await _call(http, "POST", f"/api/v1/admin/accounts/{user_id}/credits", admin.key, 201, grant)
    body = {
        "name": "Crash bench agent",
        "model": FAKE_MODEL_ID,
        "instructions": "You are the crash benchmark agent.",
        "tools": [tool],
    }
    agent = await _call(http, "POST", "/api/v1/agents", user.key, 201, body)
    deployed = await _call(http, "POST", f"/api/v1/agents/{agent['id']}/deploy", user.key, 200)
    if deployed.get("status") != "running":
        raise RuntimeError(f"the agent did not start: {deployed}")
    return Account(key=user.key, user_id=user_id, agent_id=str(agent["id"]))


@dataclass(frozen=True)
class Sent:
    message_id: str
    thread_id: str
    text: str


async def send_all(http: httpx.AsyncClient, account: Account, count: int) -> list[Sent]:
    """`count` messages at once, one per contact, each answered 202 (`wait_seconds=0`)."""

    async def send(n: int) -> Sent:
        text = f"Crash bench message {n + 1} of {count}"
        body = {"text": text, "contact": f"crash-contact-{n + 1}", "wait_seconds": 0}
        path = f"/api/v1/agents/{account.agent_id}/messages"
        answer = await _call(http, "POST", path, account.key, 202, body)
        message = answer["message"]
        return Sent(str(message["id"]), str(message["thread_id"]), text)

    return list(await asyncio.gather(*(send(n) for n in range(count))))


@dataclass
class Replies:
    """What the API shows of each message: its status and the ids of the replies to it."""

    status: dict[str, str] = field(default_factory=dict)
    replies: dict[str, list[str]] = field(default_factory=dict)

    def settled(self, sent: list[Sent]) -> bool:
        return all(self.status.get(s.message_id, "pending") != "pending" for s in sent)


async def read_replies(http: httpx.AsyncClient, account: Account, sent: list[Sent]) -> Replies:
    async def thread(thread_id: str) -> list[dict[str, Any]]:
        path = f"/api/v1/agents/{account.agent_id}/threads/{thread_id}/messages"
        response = await http.get(path, headers={"Authorization": f"Bearer {account.key}"})
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status_code} {response.text[:300]}")
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    found = Replies()
    for messages in await asyncio.gather(*(thread(s.thread_id) for s in sent)):
        for message in messages:
            if message["role"] == "user":
                found.status[message["id"]] = message["status"]
            elif message.get("reply_to_id"):
                found.replies.setdefault(message["reply_to_id"], []).append(message["id"])
    return found


# -- the fake model's counters and the ledger ----------------------------------------------------


async def model_stats(http: httpx.AsyncClient, model_url: str) -> dict[str, Any]:
    root = model_url.removesuffix("/api/v1")
    response = await http.get(f"{root}/stats")
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


@dataclass(frozen=True)
class Ledger:
    charges: dict[tuple[str, int], int]  # (message, step) → usage entries in the ledger
    usage_rows: int  # usage records with outcome ok, for these messages
    active_holds: int  # holds left by attempts that died (they expire, charging nothing)


async def read_ledger(database_url: str, user_id: str, message_ids: set[str]) -> Ledger:
    from sqlalchemy import text

    from lunogen.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            keys = await conn.execute(
                text(
                    "SELECT idempotency_key FROM credit_entries "
                    "WHERE account_id = :user AND kind = 'usage'"
                ),
                {"user": user_id},
            )
            usage = await conn.execute(
                text(
                    "SELECT message_id FROM usage_records WHERE owner_id = :user AND outcome = 'ok'"
                ),
                {"user": user_id},
            )
            holds = await conn.execute(
                text(
                    "SELECT count(*) FROM credit_holds "
                    "WHERE account_id = :user AND status = 'active'"
                ),
                {"user": user_id},
            )
            charges: dict[tuple[str, int], int] = {}
            for (key,) in keys:
                _, message_id, step, _fingerprint = str(key).split(":", 3)
                if message_id in message_ids:
                    charges[(message_id, int(step))] = charges.get((message_id, int(step)), 0) + 1
            usage_rows = sum(1 for (message_id,) in usage if message_id in message_ids)
            return Ledger(charges, usage_rows, int(holds.scalar_one()))
    finally:
        await engine.dispose()


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Result:
    figures: dict[str, float]
    verify_output: str
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [
            f"{self.figures[key]:.0f} {label}"
            for key, label in (
                ("lost", "lost"),
                ("duplicated", "duplicated"),
                ("charged_twice", "charged twice"),
            )
            if self.figures[key]
        ]
        if self.figures["verify_exit"] != 0:
            found.append(f"lunogen billing verify exited {self.figures['verify_exit']:.0f}")
        if self.figures["kills"] < self.figures["rounds"]:
            found.append(f"only {self.figures['kills']:.0f} of {self.figures['rounds']:.0f} kills")
        return found


class Turns:
    """The process(es) that run the turns: start, SIGKILL, start again on the same data."""

    def __init__(self, stack: Stack, options: argparse.Namespace) -> None:
        self.stack = stack
        self.options = options

    def start(self) -> None:
        if self.options.scaled:
            self.stack.workers = []
            self.stack.start_workers(self.options.worker_processes)
        else:
            self.stack.start_server(self.options)

    def kill(self) -> None:
        """SIGKILL to each process group, and reap: no handler, no clean-up, leases left."""
        victims = self.stack.workers if self.options.scaled else [self.stack.server]
        for process in victims:
            assert process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            if process in self.stack.processes.running:
                self.stack.processes.running.remove(process)


async def drive(
    options: argparse.Namespace,
    stack: Stack,
    turns: Turns,
    model_url: str,
    people: tuple[Person, Person],
    say: Progress,
) -> tuple[dict[str, float], Account, list[Sent], dict[str, Any]]:
    figures: dict[str, float] = {"rounds": options.rounds, "in_flight": options.in_flight}
    async with _client(stack.url) as http:
        say(f"setting up over the API: consent, Pro plan, credits, agent with {options.tool!r}")
        account = await provision(http, *people, options.tool)
        calls_per_turn = options.tool_steps + 1
        before = (await model_stats(http, model_url))["calls"]
        say(f"sending {options.in_flight} messages at once ({calls_per_turn} model calls each)")
        started = time.monotonic()
        sent = await send_all(http, account, options.in_flight)
        kills = 0
        started_at = before  # the fake's count when the process that runs the turns started
        unanswered = len(sent)
        calls_left = len(sent) * calls_per_turn
        for round_number in range(1, options.rounds + 1):
            if round_number > 1:
                replies = await read_replies(http, account, sent)
                waiting = [s for s in sent if not replies.replies.get(s.message_id)]
                unanswered = len(waiting)
                calls_left = _calls_left(await model_stats(http, model_url), waiting, options)
            # A share of the calls the unanswered turns still need, so that the kills left are
            # spread over what is left to do.
            per_round = max(1, calls_left // (options.rounds - round_number + 2))
            threshold = started_at + per_round
            say(
                f"round {round_number}: {unanswered} unanswered; waiting for {per_round} more "
                f"calls to reach the fake (to call {threshold - before})"
            )
            deadline = time.monotonic() + KILL_TIMEOUT_SECONDS
            next_look = time.monotonic() + 1  # at the replies, now and then (20 requests)
            while True:
                calls = (await model_stats(http, model_url))["calls"]
                if calls >= threshold:
                    break
                if time.monotonic() > next_look:
                    if (await read_replies(http, account, sent)).settled(sent):
                        break
                    next_look = time.monotonic() + 1
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the fake received {calls - before} calls, no more")
                await asyncio.sleep(0.01)
            if calls < threshold:
                say("  every message was answered before the kill: no kill this round")
                continue
            turns.kill()
            kills += 1
            say(f"  SIGKILL after {calls - before} calls received; starting again")
            started_at = (await model_stats(http, model_url))["calls"]
            turns.start()
        say("waiting until every message is answered")
        killed_at = time.monotonic()
        deadline = time.monotonic() + ANSWER_TIMEOUT_SECONDS
        replies = await read_replies(http, account, sent)
        while not replies.settled(sent) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            replies = await read_replies(http, account, sent)
        figures["seconds_to_answer_all"] = time.monotonic() - started
        figures["seconds_after_last_restart"] = time.monotonic() - killed_at
        # A late second answer would show up within a lease: wait one, and read again.
        await asyncio.sleep(options.lease_seconds + 1)
        replies = await read_replies(http, account, sent)
        stats = await model_stats(http, model_url)
    figures["kills"] = kills
    figures["answered"] = sum(1 for s in sent if replies.replies.get(s.message_id))
    figures["lost"] = sum(1 for s in sent if not replies.replies.get(s.message_id))
    figures["failed"] = sum(1 for s in sent if replies.status.get(s.message_id) == "failed")
    figures["duplicated"] = sum(1 for s in sent if len(replies.replies.get(s.message_id, [])) > 1)
    figures["calls_seen"] = stats["calls"] - before
    return figures, account, sent, stats


def _calls_left(stats: dict[str, Any], waiting: list[Sent], options: argparse.Namespace) -> int:
    """About the calls the turns of `waiting` still make: the steps the fake has not been asked
    yet, and the step each was last asked again (it was in flight at the kill)."""
    asked: dict[str, set[int]] = {}
    for key in stats["per_step"]:
        step, text = key.split(":", 1)
        asked.setdefault(text, set()).add(int(step))
    steps = options.tool_steps + 1
    return sum(min(steps, steps - len(asked.get(s.text, set())) + 1) for s in waiting)


def account_for(
    figures: dict[str, float], ledger: Ledger, sent: list[Sent], stats: dict[str, Any]
) -> list[str]:
    """Fill in the ledger's figures; return a line per (message, step) charged more than once."""
    by_text = {s.text: s.message_id for s in sent}
    seen: dict[tuple[str, int], int] = {}
    for key, count in stats["per_step"].items():
        step, text = key.split(":", 1)
        if text in by_text:
            seen[(by_text[text], int(step))] = count
    twice = {pair: n for pair, n in ledger.charges.items() if n > 1}
    figures["charges"] = sum(ledger.charges.values())
    figures["steps_charged"] = len(ledger.charges)
    figures["charged_twice"] = len(twice)
    figures["messages_charged_twice"] = len({message for message, _ in twice})
    figures["extra_charges"] = figures["charges"] - figures["steps_charged"]
    figures["usage_rows"] = ledger.usage_rows
    figures["steps_called"] = len(seen)
    figures["calls_made_again"] = sum(seen.values()) - len(seen)
    figures["active_holds"] = ledger.active_holds
    return [
        f"message {message} step {step}: {n} charges, {seen.get((message, step), 0)} calls"
        for (message, step), n in sorted(twice.items())
    ]


def verify(stack: Stack) -> tuple[int, str]:
    done = subprocess.run(
        [str(stack.lunogen), "billing", "verify"],
        capture_output=True,
        text=True,
        env=stack.env,
        cwd=stack.run_dir,
        timeout=300,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def measure(options: argparse.Namespace, say: Progress, number: int) -> Result:
    with run_directory("lunogen-crash-bench-", keep=options.keep, say=say) as run_dir:
        return _measure_in(run_dir, options, say, number)


def _measure_in(run_dir: Path, options: argparse.Namespace, say: Progress, number: int) -> Result:
    started = time.monotonic()
    load_before = load_average()
    with Processes() as processes:
        say(
            f"run {number}: starting the fake model (latency {options.model_latency_ms:g} ms, "
            f"{options.tool_steps} tool steps per turn)"
        )
        model_url = start_fake_model(
            processes,
            options.model_latency_ms,
            run_dir / "model.log",
            tool_steps=options.tool_steps,
        )
        port = free_port()
        env = _environment(options, run_dir, port, model_url)
        env.update(
            {
                "LUNOGEN_TURN_LEASE_SECONDS": str(options.lease_seconds),
                "LUNOGEN_SWEEP_INTERVAL_SECONDS": "0.5",
                "LUNOGEN_CATALOG_REFRESH_HOURS": "0",
            }
        )
        stack = Stack(processes, _lunogen_executable(), run_dir, env, port)
        say("preparing the data dir: db upgrade, models refresh, users, keys (CLI)")
        admin, user, _ = prepare_data(stack)
        shape = "scaled: serve --no-worker + worker" if options.scaled else "embedded"
        say(f"starting lunogen serve ({shape}) on {stack.url}")
        stack.start_server(options)
        turns = Turns(stack, options)
        if options.scaled:
            turns.start()
        try:
            figures, account, sent, stats = asyncio.run(
                drive(options, stack, turns, model_url, (admin, user), say)
            )
        except Exception:
            print(stack.logs(), file=sys.stderr)
            raise
        say("stopping lunogen, then reading the ledger and running lunogen billing verify")
        for process in [*stack.workers, stack.server]:
            if process is not None and process in processes.running:
                processes.stop(process)
    ledger = asyncio.run(
        read_ledger(_database_url(options, stack), account.user_id, {s.message_id for s in sent})
    )
    twice = account_for(figures, ledger, sent, stats)
    figures["verify_exit"], verify_output = verify(stack)
    figures["seconds"] = time.monotonic() - started
    figures["load_before"] = load_before
    figures["load_after"] = load_average()
    return Result(figures, verify_output, twice)


def _database_url(options: argparse.Namespace, stack: Stack) -> str:
    if options.scaled:
        return str(options.database_url)
    return f"sqlite+aiosqlite:///{(stack.data_dir / 'lunogen.db').resolve()}"


# -- report --------------------------------------------------------------------------------------


FIGURES = [
    ("in_flight", "messages sent at once"),
    ("kills", "SIGKILLs (mid-turn)"),
    ("answered", "answered"),
    ("lost", "lost (no reply)"),
    ("failed", "failed (among the lost)"),
    ("duplicated", "duplicated (more than one reply)"),
    ("charged_twice", "charged twice: (message, step) pairs"),
    ("messages_charged_twice", "charged twice: messages"),
    ("extra_charges", "charges beyond one per (message, step)"),
    ("steps_called", "(message, step) pairs the fake was asked"),
    ("calls_seen", "model calls the fake received"),
    ("calls_made_again", "calls made again after a kill (paid by the operator)"),
    ("charges", "usage charges in the ledger"),
    ("steps_charged", "(message, step) pairs charged"),
    ("usage_rows", "usage records (ok)"),
    ("active_holds", "holds left by killed attempts (expire, charge nothing)"),
    ("verify_exit", "lunogen billing verify exit code"),
    ("seconds_to_answer_all", "seconds from sending to all answered"),
    ("seconds_after_last_restart", "seconds from the last restart to all answered"),
    ("seconds", "seconds for the whole run"),
    ("load_before", "load average (1 min) before"),
    ("load_after", "load average (1 min) after"),
]


def print_result(result: Result, number: int) -> None:
    print(f"\nRun {number}")
    for key, label in FIGURES:
        value = result.figures.get(key, math.nan)
        shown = f"{value:,.1f}" if key.startswith(("seconds", "load")) else f"{value:,.0f}"
        print(f"  {label:<58} {shown:>10}")
    print("  lunogen billing verify: " + (result.verify_output.splitlines() or ["?"])[-1])
    for line in result.notes:
        print(f"  {line}")
    problems = result.problems
    print("  " + ("PROBLEMS: " + "; ".join(problems) if problems else "clean"))


def _describe(options: argparse.Namespace) -> list[str]:
    facts = machine_facts()
    shape = (
        f"scaled shape (PostgreSQL + Redis, {options.worker_processes} worker process(es) killed)"
        if options.scaled
        else "embedded shape (SQLite, lunogen serve killed)"
    )
    return [
        f"Crash (kill -9 mid-turn): {shape}",
        "machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()),
        "code: "
        + (
            f"lunogen from {Path(options.src).resolve() / 'src'} (--src)"
            if options.src
            else _git_state(Path(__file__).resolve().parent.parent)
        ),
        f"settings: {options.in_flight} in flight, {options.rounds} kill(s) per run, model "
        f"latency {options.model_latency_ms:g} ms, {options.tool_steps} tool step(s) per turn "
        f"({options.tool!r}), turn lease {options.lease_seconds:g} s",
    ]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SIGKILL the process that runs the turns with messages in flight, restart "
        "it, and count lost, duplicated and twice-charged messages.",
    )
    parser.add_argument("--in-flight", type=int, default=20, help="messages sent at once")
    parser.add_argument("--rounds", type=int, default=1, help="kills (and restarts) per run")
    parser.add_argument("--repeat", type=int, default=1, help="whole runs")
    parser.add_argument("--model-latency-ms", type=float, default=400.0, help="per model call")
    parser.add_argument("--tool-steps", type=int, default=2, help="tool calls per turn")
    parser.add_argument("--tool", default="remember", help="the agent's tool the fake calls")
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=5.0,
        help="LUNOGEN_TURN_LEASE_SECONDS (above the time a restart takes, so that the kill of "
        "the next round sees the restarted process's turns from their start)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 on any problem")
    parser.add_argument("--database-url", help="PostgreSQL of its own: the scaled shape")
    parser.add_argument("--redis-url", help="Redis for the scaled shape (with --database-url)")
    parser.add_argument(
        "--worker-processes", type=int, default=1, help="scaled shape: `lunogen worker` count"
    )
    parser.add_argument(
        "--src",
        metavar="DIR",
        help="run the lunogen package of this source tree (DIR/src), e.g. a `git archive` "
        "export of a commit, instead of the working tree the virtualenv installs",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and the logs")
    options = parser.parse_args(argv)
    if bool(options.database_url) != bool(options.redis_url):
        parser.error("the scaled shape needs both --database-url and --redis-url")
    if min(options.in_flight, options.rounds, options.repeat, options.worker_processes) < 1:
        parser.error("--in-flight, --rounds, --repeat and --worker-processes need at least 1")
    if options.tool_steps < 0 or options.lease_seconds < 1:
        parser.error("--tool-steps must be 0 or more, --lease-seconds at least 1")
    if options.src and not (Path(options.src) / "src" / "lunogen").is_dir():
        parser.error(f"--src: no src/lunogen in {options.src}")
    options.scaled = bool(options.database_url)
    options.workers = 1  # what Stack.start_server reads
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    if options.src:  # that tree for every child (`serve --help` included) and the ledger
        tree = str(Path(options.src).resolve() / "src")
        os.environ["PYTHONPATH"] = tree
        sys.path.insert(0, tree)
    exit_on_sigterm()
    say = Progress()
    description = _describe(options)
    for line in description:
        say(line)
    results = [measure(options, say, n) for n in range(1, options.repeat + 1)]
    print("\n".join(description))
    for number, result in enumerate(results, 1):
        print_result(result, number)
    problems = [p for r in results for p in r.problems]
    if options.json:
        payload = {
            "description": description,
            "runs": [
                {"figures": r.figures, "verify": r.verify_output, "charged_twice": r.notes}
                for r in results
            ],
            "problems": problems,
        }
        Path(options.json).write_text(json.dumps(payload, indent=2) + "\n")
    print()
    print(
        f"Problems: {'; '.join(problems)}"
        if problems
        else "Clean: 0 lost, 0 duplicated, 0 charged twice, ledger verified."
    )
    return 1 if options.check and problems else 0


if __name__ == "__main__":
    run_main(main)
