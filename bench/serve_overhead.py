"""Black-box serve overhead: `lunogen serve` as a real process, driven over real loopback HTTP.

    .venv/bin/python bench/serve_overhead.py                  # the full run (a few minutes)
    .venv/bin/python bench/serve_overhead.py --quick          # CI smoke run (well under a minute)
    .venv/bin/python bench/serve_overhead.py --repeat 3       # median, min and max of 3 runs
    .venv/bin/python bench/serve_overhead.py --check          # exit 1 when a target is missed

What runs, each in a process of its own (all stopped on exit, error or Ctrl-C):

- a zero-latency fake model speaking OpenRouter's wire format (`bench/_support.py fake-model`:
  it echoes the last message, with `usage` and its `cost`; `--model-latency-ms` slows it down);
- `lunogen serve` on a fresh data directory (embedded shape: SQLite, in-process jobs), with the
  production defaults: logs at INFO as JSON (into a file), encryption at rest, credit holds, the
  durable inbox. With `--database-url` and `--redis-url` it is the scaled shape instead:
  `lunogen serve --no-worker` plus `--worker-processes` `lunogen worker` processes.

The account is made the way an operator would: `lunogen db upgrade`, `lunogen models refresh`
(the fake's priced model enters the catalog), `lunogen user create` (an admin and a user) and
`lunogen apikey create`; then over the API: consent, the Pro plan and 1,000,000 credits through
the admin API (so neither the rate limit nor the balance ever refuses a message), 15 more keys
(requests rotate over the 16 keys), and an agent created and deployed.

Every message is `POST /api/v1/agents/{id}/messages`, waiting for the answer. The baseline is the
same keep-alive httpx client posting an equivalent chat completion (instructions, the thread so
far, the new message) straight to the fake; baseline and platform alternate in batches within one
run, so that load on the machine hits both alike. Overhead p50 = platform p50 - baseline p50;
overhead p99 = platform p99 - baseline p50 (the tail is the platform's). CPU per message is the
server's (user + system time of its process tree, from /proc), not this process's.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (
    FAKE_MODEL_ID,
    FAKE_MODEL_KEY,
    Figure,
    MachineCpu,
    Processes,
    Progress,
    Scorecard,
    Target,
    conclude,
    cpu_seconds,
    exit_on_sigterm,
    free_port,
    load_average,
    machine_facts,
    percentile,
    process_tree,
    rss_bytes,
    run_directory,
    run_main,
    spread,
    start_fake_model,
    tail,
)

INSTRUCTIONS = "You are the benchmark agent. Answer in one short sentence."
PASSWORD = "correct horse battery staple 42"
CREDITS = 1_000_000
EXTRA_KEYS = 15  # with the CLI's key, 16 keys x 2,000 requests/min (Pro) = 533 messages/s
MAX_TOKENS = 1024
HEALTHY_TIMEOUT_SECONDS = 120.0
MB = 1_000_000
MIB = 1024 * 1024

FULL = {
    "messages": 200,
    "long_turns": 500,
    "window": 50,
    "throughput_seconds": 20.0,
    "warmup": 20,
    "batch": 10,
    "deploys": 100,
}
QUICK = {
    "messages": 30,
    "long_turns": 40,
    "window": 10,
    "throughput_seconds": 3.0,
    "warmup": 5,
    "batch": 5,
    "deploys": 10,
}


# -- figures and targets -------------------------------------------------------------------------


FIGURES = [
    Figure("start_healthy_s", "start → healthy (migrated data dir)", "s", 2),
    Figure("baseline_p50_ms", "baseline p50 (fake model direct)", "ms", 2),
    Figure("baseline_p99_ms", "baseline p99", "ms", 2),
    Figure("platform_p50_ms", "platform p50 (POST /messages → answer)", "ms", 2),
    Figure("platform_p99_ms", "platform p99", "ms", 2),
    Figure("overhead_p50_ms", "overhead p50", "ms", 2),
    Figure("overhead_p99_ms", "overhead p99 (platform p99 - baseline p50)", "ms", 2),
    Figure("server_cpu_ms", "server CPU per message (1 sender)", "ms", 1),
    Figure("client_cpu_ms", "bench client CPU per message (1 sender)", "ms", 2),
    Figure("rate_1", "1 sender: messages/s", "msg/s", 1),
    Figure("p50_1_ms", "1 sender: p50", "ms", 1),
    Figure("p99_1_ms", "1 sender: p99", "ms", 1),
    Figure("rate_8", "8 senders: messages/s", "msg/s", 1),
    Figure("p50_8_ms", "8 senders: p50", "ms", 1),
    Figure("p99_8_ms", "8 senders: p99", "ms", 1),
    Figure("p99_over_p50_8", "8 senders: p99 / p50", "x", 2),
    Figure("sender_spread_pct", "8 senders: largest deviation of a sender's answers", "%", 1),
    Figure("server_cpu_8_ms", "server CPU per message (8 senders)", "ms", 1),
    Figure("long_first_p50_ms", "long conversation: p50 of the first turns", "ms", 1),
    Figure("long_last_p50_ms", "long conversation: p50 of the last turns", "ms", 1),
    Figure("long_ratio", "long conversation: last / first p50", "x", 2),
    Figure("long_cpu_first_ms", "long conversation: server CPU per message, first", "ms", 1),
    Figure("long_cpu_last_ms", "long conversation: server CPU per message, last", "ms", 1),
    Figure("long_cpu_ratio", "long conversation: last / first server CPU", "x", 2),
    Figure("long_overhead_first_ms", "long conversation: overhead p50, first turns", "ms", 1),
    Figure("long_overhead_last_ms", "long conversation: overhead p50, last turns", "ms", 1),
    Figure("deploy_p50_ms", "deploy → running p50 (POST deploy, API channel)", "ms", 2),
    Figure("deploy_p99_ms", "deploy → running p99", "ms", 2),
    Figure("read_p50_ms", "baseline: GET the agent p50 (same key, same run)", "ms", 2),
    Figure("deploy_cpu_ms", "server CPU per deploy", "ms", 1),
    Figure("rss_start_mib", "server RSS when healthy", "MiB", 1),
    Figure("rss_warm_mib", "server RSS after warm-up", "MiB", 1),
    Figure("rss_end_mib", "server RSS at the end", "MiB", 1),
    Figure("rss_growth_mb_10k", "RSS growth per 10,000 messages after warm-up", "MB", 2),
    Figure("soak_first_half_mb_10k", "soak: RSS growth per 10,000, first half", "MB", 2),
    Figure("soak_second_half_mb_10k", "soak: RSS growth per 10,000, second half", "MB", 2),
    Figure("messages", "platform messages after warm-up", "", 0),
    Figure("load_before", "load average (1 min) before", "", 2),
    Figure("load_after", "load average (1 min) after", "", 2),
    Figure("machine_busy_pct", "machine CPU busy during the run (all processes)", "%", 0),
]


TARGETS = {
    "overhead_p50_ms": Target("≤ 5 ms", lambda v: v <= 5),
    "overhead_p99_ms": Target("≤ 15 ms", lambda v: v <= 15),
    "server_cpu_ms": Target("≤ 5 ms", lambda v: v <= 5),
    "long_ratio": Target("within ±20 % (0.80-1.20)", lambda v: 0.8 <= v <= 1.2),
    "rate_8": Target("≥ 200 msg/s", lambda v: v >= 200),
    "p99_over_p50_8": Target("≤ 3x", lambda v: v <= 3),
    "sender_spread_pct": Target("≤ 20 %", lambda v: v <= 20),
    "start_healthy_s": Target("≤ 1 s", lambda v: v <= 1),
    "deploy_p50_ms": Target("≤ 10 ms", lambda v: v <= 10),
    "rss_growth_mb_10k": Target("≤ 5 MB", lambda v: v <= 5),
}


SCORES = Scorecard(FIGURES, TARGETS)


@dataclass
class Run:
    figures: dict[str, float]
    notes: list[str] = field(default_factory=list)  # per-run details (answers per sender, ...)


# -- the processes under test --------------------------------------------------------------------


@dataclass
class Stack:
    processes: Processes
    lunogen: Path
    run_dir: Path
    env: dict[str, str]
    port: int
    server: subprocess.Popen[str] | None = None
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        roots = [p.pid for p in [self.server, *self.workers] if p is not None]
        return process_tree(roots)

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def cli(self, *args: str) -> str:
        return self.cli_all([(list(args), None)])[0]

    def cli_all(self, commands: list[tuple[list[str], str | None]]) -> list[str]:
        """Run CLI commands at once (each pays Python's start-up; the machine has cores)."""
        started = [
            subprocess.Popen(
                [str(self.lunogen), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env,
                cwd=self.run_dir,
            )
            for args, _ in commands
        ]
        outputs = []
        try:
            for process, (args, stdin) in zip(started, commands, strict=True):
                out, err = process.communicate(stdin, timeout=300)
                if process.returncode != 0:
                    raise RuntimeError(
                        f"lunogen {' '.join(args)}: exit {process.returncode}\n{err}"
                    )
                outputs.append(out)
        finally:
            for process in started:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return outputs

    def compile_package(self) -> None:
        """Write the bytecode of the lunogen package the server will import, as an installed
        package has it: start → healthy then measures the start, not compilation (with
        PYTHONDONTWRITEBYTECODE set, every start would compile ~130 modules, ~0.1 s)."""
        python = str(self.lunogen.parent / "python")
        script = "import compileall, os, lunogen; compileall.compile_dir("
        script += "os.path.dirname(lunogen.__file__), quiet=1)"
        subprocess.run([python, "-c", script], env=self.env, cwd=self.run_dir, check=True)

    def start_server(self, options: argparse.Namespace) -> float:
        """Start `lunogen serve`; return the seconds until GET /healthz answered 200."""
        argv = [str(self.lunogen), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir)]
        if options.scaled:
            argv.append("--no-worker")
        if options.workers > 1 or "--workers" in _serve_help(options.src):
            # Always said: serve's own default is one process per CPU.
            argv += ["--workers", str(options.workers)]
        log = self.run_dir / "serve.log"
        self.compile_package()
        started = time.perf_counter()
        self.server = self.processes.start(argv, env=self.env, cwd=self.run_dir, log=log)
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while time.perf_counter() - started < HEALTHY_TIMEOUT_SECONDS:
                if self.server.poll() is not None:
                    raise RuntimeError(
                        f"lunogen serve exited ({self.server.returncode}):\n{tail(log)}"
                    )
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
        raise RuntimeError(f"lunogen serve was not healthy within {HEALTHY_TIMEOUT_SECONDS} s")

    def start_workers(self, count: int) -> None:
        for n in range(count):
            argv = [str(self.lunogen), "worker", "--data-dir", str(self.data_dir)]
            log = self.run_dir / f"worker-{n}.log"
            self.workers.append(self.processes.start(argv, env=self.env, cwd=self.run_dir, log=log))

    def logs(self) -> str:
        parts = []
        for path in sorted(self.run_dir.glob("*.log")):
            parts.append(f"--- {path.name} (last lines)\n{tail(path)}")
        return "\n".join(parts)


def _environment(
    options: argparse.Namespace, stack_dir: Path, port: int, model: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGEN_")}
    env.update(
        {
            "LUNOGEN_DATA_DIR": str(stack_dir / "data"),
            "LUNOGEN_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "LUNOGEN_LLM_BASE_URL": model,
            "LUNOGEN_OPENROUTER_API_KEY": FAKE_MODEL_KEY,
            "LUNOGEN_LLM_API_STYLE": "openrouter",
            # The production defaults, stated so that nothing from elsewhere changes them.
            "LUNOGEN_LOG_LEVEL": "INFO",
            "LUNOGEN_LOG_JSON": "true",
            "COLUMNS": "200",  # the CLI prints through rich: no wrapped lines to parse
        }
    )
    if options.src:
        # Ahead of the installed (editable) package on sys.path: the code of that tree runs.
        env["PYTHONPATH"] = str(Path(options.src).resolve() / "src")
    if options.scaled:
        env["LUNOGEN_DATABASE_URL"] = options.database_url
        env["LUNOGEN_REDIS_URL"] = options.redis_url
        # A queue of this run's own, so that nothing else on that Redis takes its jobs.
        env["LUNOGEN_JOB_QUEUE"] = f"lunogen:bench:{os.getpid()}:{port}"
    return env


def _lunogen_executable() -> Path:
    beside = Path(sys.executable).parent / "lunogen"
    if beside.exists():
        return beside
    found = shutil.which("lunogen")
    if found is None:
        raise RuntimeError("no `lunogen` executable: run with the project's .venv/bin/python")
    return Path(found)


# -- the account, over the CLI and the API -------------------------------------------------------


@dataclass
class Account:
    keys: list[str]
    agent_id: str


def _key_in(output: str) -> str:
    found = re.search(r"lg_live_[0-9a-f]{64}", output)
    if found is None:
        raise RuntimeError(f"no key in the output of `lunogen apikey create`: {output!r}")
    return found.group(0)


@dataclass(frozen=True)
class Person:
    email: str
    key: str  # the key `lunogen apikey create` printed


def prepare_data(stack: Stack) -> tuple[Person, Person, float]:
    """Migrate, load the fake's catalog, create the accounts and a key each; return the admin,
    the user and the seconds `lunogen db upgrade` took on the fresh database."""
    started = time.perf_counter()
    stack.cli("db", "upgrade")
    migrate_seconds = time.perf_counter() - started
    stack.cli("models", "refresh")
    suffix = f"{os.getpid()}-{stack.port}"
    admin, user = f"bench-admin-{suffix}@example.com", f"bench-user-{suffix}@example.com"
    stack.cli_all(
        [
            (["user", "create", admin, "--role", "admin", "--password-stdin"], PASSWORD + "\n"),
            (["user", "create", user, "--password-stdin"], PASSWORD + "\n"),
        ]
    )
    outputs = stack.cli_all(
        [(["apikey", "create", admin], None), (["apikey", "create", user], None)]
    )
    people = Person(admin, _key_in(outputs[0])), Person(user, _key_in(outputs[1]))
    return *people, migrate_seconds


async def _call(
    http: httpx.AsyncClient, method: str, url: str, key: str, expected: int, body: Any = None
) -> dict[str, Any]:
    response = await http.request(
        method, url, json=body, headers={"Authorization": f"Bearer {key}"}
    )
    if response.status_code != expected:
        raise RuntimeError(f"{method} {url}: HTTP {response.status_code} {response.text[:500]}")
    payload: dict[str, Any] = response.json()
    return payload


async def _consent(base_url: str, person: Person) -> None:
    """Consent is given in a signed-in browser session (a key may not give it)."""
    async with _client(base_url) as browser:
        login = {"email": person.email, "password": PASSWORD}
        response = await browser.post("/api/v1/auth/login", json=login)
        if response.status_code != 200:
            raise RuntimeError(f"sign-in: HTTP {response.status_code} {response.text[:500]}")
        consent = {"age_confirmed": True, "accept_terms": True, "accept_privacy": True}
        csrf = {"X-CSRF-Token": browser.cookies["lg_csrf"]}
        response = await browser.post("/api/v1/auth/consent", json=consent, headers=csrf)
        if response.status_code != 200:
            raise RuntimeError(f"consent: HTTP {response.status_code} {response.text[:500]}")


async def provision(http: httpx.AsyncClient, admin: Person, user: Person) -> Account:
    """Consent, the Pro plan and credits, more keys, and a deployed agent; over the API."""
    for person in (admin, user):
        await _consent(str(http.base_url), person)
    admin_key, user_key = admin.key, user.key
    user_id = str((await _call(http, "GET", "/api/v1/me", user_key, 200))["id"])
    await _call(http, "PATCH", f"/api/v1/admin/users/{user_id}", admin_key, 200, {"plan": "pro"})
    grant = {"credits": str(CREDITS), "reason": "serve_overhead benchmark"}
    await _call(http, "POST", f"/api/v1/admin/accounts/{user_id}/credits", admin_key, 201, grant)
    keys = [user_key]
    for n in range(EXTRA_KEYS):
        body = {"name": f"bench {n}", "scopes": ["full"]}
        keys.append(str((await _call(http, "POST", "/api/v1/keys", user_key, 201, body))["key"]))
    agent_body = {"name": "Bench agent", "model": FAKE_MODEL_ID, "instructions": INSTRUCTIONS}
    agent = await _call(http, "POST", "/api/v1/agents", user_key, 201, agent_body)
    deployed = await _call(http, "POST", f"/api/v1/agents/{agent['id']}/deploy", user_key, 200)
    if deployed.get("status") != "running":
        raise RuntimeError(f"the agent did not start: {deployed}")
    return Account(keys=keys, agent_id=str(agent["id"]))


# -- driving it ----------------------------------------------------------------------------------


def _client(base_url: str = "") -> httpx.AsyncClient:
    # trust_env=False: no proxy from the environment between the bench and 127.0.0.1.
    return httpx.AsyncClient(base_url=base_url, timeout=120.0, trust_env=False)


@dataclass
class Driver:
    """Sends messages to the agent and the equivalent calls to the fake model."""

    server_url: str
    model_url: str
    account: Account
    sent: int = 0

    def _auth(self) -> dict[str, str]:
        self.sent += 1
        return {"Authorization": f"Bearer {self.account.keys[self.sent % len(self.account.keys)]}"}

    async def message(self, http: httpx.AsyncClient, contact: str, text: str) -> float:
        started = time.perf_counter()
        response = await http.post(
            f"{self.server_url}/api/v1/agents/{self.account.agent_id}/messages",
            json={"text": text, "contact": contact},
            headers=self._auth(),
        )
        elapsed = time.perf_counter() - started
        status = response.json().get("status") if response.status_code == 200 else None
        if status != "answered":
            raise RuntimeError(f"no answer: HTTP {response.status_code} {response.text[:500]}")
        return elapsed

    async def model_call(
        self, http: httpx.AsyncClient, messages: list[dict[str, str]]
    ) -> tuple[float, str]:
        body = {
            "model": FAKE_MODEL_ID,
            "messages": messages,
            "max_tokens": MAX_TOKENS,
            "usage": {"include": True},
            "provider": {"data_collection": "deny"},
        }
        started = time.perf_counter()
        response = await http.post(
            f"{self.model_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {FAKE_MODEL_KEY}"},
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"baseline: HTTP {response.status_code} {response.text[:500]}")
        return elapsed, str(response.json()["choices"][0]["message"]["content"])


@dataclass
class Conversation:
    platform: list[float]  # seconds per turn, in turn order
    baseline: list[float]  # seconds per equivalent model call, in turn order
    server_cpu: list[float]  # seconds of the server's process tree per turn (its round's mean)
    client_cpu: float  # seconds of this process spent on the platform requests

    def cpu_ms(self, turns: slice = slice(None)) -> float:
        """The server's mean CPU milliseconds per message over these turns."""
        chosen = self.server_cpu[turns]
        return 1000 * sum(chosen) / len(chosen)


async def converse(
    driver: Driver, stack: Stack, contact: str, turns: int, batch: int, say: Progress
) -> Conversation:
    """One conversation of `turns` messages, alternating batches with the baseline, which sends
    the fake the same growing thread (instructions, earlier turns, the new message). The server's
    CPU time is read at each round (a batch of each side); what a round costs it is the
    platform batch's, and work left over from a round's last message falls in the next one."""
    platform: list[float] = []
    server_cpu: list[float] = []
    baseline: list[float] = []
    history: list[dict[str, str]] = []
    client_cpu = 0.0
    report_every = max(batch, (turns // 5) // batch * batch)
    async with _client() as http:

        async def platform_batch(first: int, count: int) -> None:
            nonlocal client_cpu
            for n in range(first, first + count):
                cpu = time.process_time()
                platform.append(await driver.message(http, contact, _text(contact, n)))
                client_cpu += time.process_time() - cpu

        async def baseline_batch(first: int, count: int) -> None:
            for n in range(first, first + count):
                prompt = {"role": "user", "content": _text(contact, n)}
                system = {"role": "system", "content": INSTRUCTIONS}
                elapsed, answer = await driver.model_call(http, [system, *history, prompt])
                baseline.append(elapsed)
                history.extend([prompt, {"role": "assistant", "content": answer}])

        for round_number, first in enumerate(range(0, turns, batch)):
            count = min(batch, turns - first)
            sides = [baseline_batch, platform_batch]
            if round_number % 2:
                sides.reverse()
            cpu_before = stack.cpu()
            for side in sides:
                await side(first, count)
            server_cpu.extend([(stack.cpu() - cpu_before) / count] * count)
            done = first + count
            if done % report_every == 0 and done < turns:
                say(
                    f"  {contact}: {done}/{turns} turns, platform p50 so far "
                    f"{percentile(platform, 50) * 1000:.1f} ms"
                )
    return Conversation(platform, baseline, server_cpu, client_cpu)


def _text(contact: str, n: int) -> str:
    return f"Message {n + 1} of the {contact} conversation"


@dataclass
class Throughput:
    senders: int
    answers: list[int]
    latencies: list[float]
    wall: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return sum(self.answers) / self.wall if self.wall > 0 else math.nan

    @property
    def deviations(self) -> list[float]:
        mean = sum(self.answers) / len(self.answers)
        return [100 * (a - mean) / mean if mean else math.nan for a in self.answers]


async def throughput(
    driver: Driver, stack: Stack, senders: int, seconds: float, thread_length: int
) -> Throughput:
    """`senders` clients (one keep-alive connection each) send for `seconds`, each waiting for
    its answer before the next message; a sender moves to a new contact every
    `thread_length` messages."""
    answers = [0] * senders
    latencies: list[float] = []

    async def sender(index: int, deadline: float) -> None:
        async with _client() as http:
            while time.perf_counter() < deadline:
                n = answers[index]
                contact = f"x{senders}-sender{index}-thread{n // thread_length}"
                latencies.append(await driver.message(http, contact, _text(contact, n)))
                answers[index] += 1

    cpu_before = stack.cpu()
    started = time.perf_counter()
    await asyncio.gather(*(sender(i, started + seconds) for i in range(senders)))
    wall = time.perf_counter() - started
    return Throughput(senders, answers, latencies, wall, stack.cpu() - cpu_before)


# -- one measurement -----------------------------------------------------------------------------


async def drive(
    options: argparse.Namespace,
    stack: Stack,
    model_url: str,
    people: tuple[Person, Person],
    say: Progress,
) -> tuple[dict[str, float], list[str]]:
    figures: dict[str, float] = {}
    notes: list[str] = []
    async with _client(stack.url) as http:
        say("setting up over the API: consent, Pro plan, credits, keys, agent, deploy")
        account = await provision(http, *people)
    driver = Driver(stack.url, model_url, account)
    figures["rss_start_mib"] = stack.rss() / MIB

    say(f"warm-up: {options.warmup} messages and {options.warmup} baseline calls")
    await converse(driver, stack, "warmup", options.warmup, options.batch, say)
    rss_warm = stack.rss()
    figures["rss_warm_mib"] = rss_warm / MIB
    sent_after_warmup = driver.sent

    say(
        f"overhead: one {options.messages}-message conversation, batches of {options.batch} "
        "alternating with the baseline"
    )
    talk = await converse(driver, stack, "overhead", options.messages, options.batch, say)
    base_p50 = percentile(talk.baseline, 50) * 1000
    figures |= {
        "baseline_p50_ms": base_p50,
        "baseline_p99_ms": percentile(talk.baseline, 99) * 1000,
        "platform_p50_ms": percentile(talk.platform, 50) * 1000,
        "platform_p99_ms": percentile(talk.platform, 99) * 1000,
        "server_cpu_ms": talk.cpu_ms(),
        "client_cpu_ms": talk.client_cpu * 1000 / len(talk.platform),
    }
    figures["overhead_p50_ms"] = figures["platform_p50_ms"] - base_p50
    figures["overhead_p99_ms"] = figures["platform_p99_ms"] - base_p50
    say(
        f"  overhead p50 {figures['overhead_p50_ms']:.1f} ms, "
        f"server CPU {figures['server_cpu_ms']:.1f} ms per message"
    )

    for senders in sorted({1, 8, *options.more_senders}):
        say(f"throughput: {senders} sender(s) for {options.throughput_seconds:g} s")
        result = await throughput(
            driver, stack, senders, options.throughput_seconds, options.thread_length
        )
        p50 = percentile(result.latencies, 50) * 1000
        p99 = percentile(result.latencies, 99) * 1000
        figures |= {f"rate_{senders}": result.rate, f"p50_{senders}_ms": p50}
        figures[f"p99_{senders}_ms"] = p99
        say(f"  {result.rate:.1f} msg/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        if senders not in (1, 8):  # --more-senders: reported as a note, no target
            notes.append(
                f"{senders} senders: {result.rate:.1f} msg/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms"
            )
        if senders == 8:
            figures["p99_over_p50_8"] = p99 / p50
            figures["sender_spread_pct"] = max(abs(d) for d in result.deviations)
            figures["server_cpu_8_ms"] = result.server_cpu * 1000 / max(1, sum(result.answers))
            notes.append(
                "8 senders, answers per sender (deviation from the mean): "
                + ", ".join(
                    f"{a} ({d:+.0f} %)"
                    for a, d in zip(result.answers, result.deviations, strict=True)
                )
            )

    window = min(options.window, options.long_turns // 2)
    say(f"long conversation: {options.long_turns} turns (turns 1-{window} vs the last {window})")
    long = await converse(driver, stack, "long", options.long_turns, options.batch, say)
    first, last = long.platform[:window], long.platform[-window:]
    figures["long_first_p50_ms"] = percentile(first, 50) * 1000
    figures["long_last_p50_ms"] = percentile(last, 50) * 1000
    figures["long_ratio"] = figures["long_last_p50_ms"] / figures["long_first_p50_ms"]
    figures["long_cpu_first_ms"] = long.cpu_ms(slice(None, window))
    figures["long_cpu_last_ms"] = long.cpu_ms(slice(-window, None))
    figures["long_cpu_ratio"] = figures["long_cpu_last_ms"] / figures["long_cpu_first_ms"]
    figures["long_overhead_first_ms"] = figures["long_first_p50_ms"] - 1000 * percentile(
        long.baseline[:window], 50
    )
    figures["long_overhead_last_ms"] = figures["long_last_p50_ms"] - 1000 * percentile(
        long.baseline[-window:], 50
    )
    notes.append(
        f"long conversation: turns 1-{window} vs {options.long_turns - window + 1}-"
        f"{options.long_turns}; baseline p50 {1000 * percentile(long.baseline[:window], 50):.1f}"
        f" → {1000 * percentile(long.baseline[-window:], 50):.1f} ms"
    )
    say(f"  p50 {figures['long_first_p50_ms']:.1f} → {figures['long_last_p50_ms']:.1f} ms")

    rss_end = stack.rss()
    messages = driver.sent - sent_after_warmup
    figures |= await deploys(stack, account.keys[0], options.deploys, say)
    if options.soak:
        soak_figures, soak_note = await soak(driver, stack, options.soak, say)
        figures |= soak_figures
        notes.append(soak_note)
    figures["rss_end_mib"] = rss_end / MIB
    figures["messages"] = messages
    figures["rss_growth_mb_10k"] = (rss_end - rss_warm) / messages * 10_000 / MB
    notes.append(
        f"RSS after warm-up → end: {(rss_end - rss_warm) / 1024 / messages:+.2f} KiB per message"
        f" over {messages} messages"
    )
    return figures, notes


async def soak(
    driver: Driver, stack: Stack, messages: int, say: Progress, senders: int = 8
) -> tuple[dict[str, float], str]:
    """RSS over `messages` more messages from 8 senders (new contact every 20 messages),
    sampled at every tenth: whether the growth measured after the short warm-up keeps going
    (a leak) or flattens (caches filling up to their bounds)."""
    say(f"soak: {messages} messages from {senders} senders, RSS at every tenth")
    step = max(1, messages // 10)
    samples: list[tuple[int, int]] = [(0, stack.rss())]
    answered = 0

    async def sender(index: int) -> None:
        nonlocal answered
        n = 0
        async with _client() as http:
            while answered < messages:
                contact = f"soak-sender{index}-thread{n // 20}"
                await driver.message(http, contact, _text(contact, n))
                n += 1
                answered += 1
                if answered % step == 0 and answered <= messages:
                    samples.append((answered, stack.rss()))
                    say(f"  {answered} messages, RSS {samples[-1][1] / MIB:.1f} MiB")

    await asyncio.gather(*(sender(i) for i in range(senders)))
    half = len(samples) // 2
    (n0, r0), (n1, r1), (n2, r2) = samples[0], samples[half], samples[-1]
    figures = {
        "soak_first_half_mb_10k": (r1 - r0) / max(1, n1 - n0) * 10_000 / MB,
        "soak_second_half_mb_10k": (r2 - r1) / max(1, n2 - n1) * 10_000 / MB,
    }
    curve = ", ".join(f"{n}: {r / MIB:.1f}" for n, r in samples)
    return figures, f"soak RSS (messages: MiB): {curve}"


async def deploys(stack: Stack, key: str, rounds: int, say: Progress) -> dict[str, float]:
    """Deploy → running of an agent with the API channel only (no provider round trip): a
    second agent is stopped (not timed) and deployed again, `rounds` times; each deploy is
    paired with a GET of the same agent, the cheapest authenticated request, as the baseline."""
    say(f"deploy → running: {rounds} stop/deploy rounds, each beside a GET of the agent")
    async with _client(stack.url) as http:
        body = {"name": "Deploy bench", "model": FAKE_MODEL_ID, "instructions": INSTRUCTIONS}
        agent_id = str((await _call(http, "POST", "/api/v1/agents", key, 201, body))["id"])
        path = f"/api/v1/agents/{agent_id}"
        headers = {"Authorization": f"Bearer {key}"}
        deployed: list[float] = []
        read: list[float] = []
        cpu = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            await _call(http, "GET", path, key, 200)
            read.append(time.perf_counter() - started)
            cpu_before = stack.cpu()
            started = time.perf_counter()
            response = await http.post(f"{path}/deploy", headers=headers)
            deployed.append(time.perf_counter() - started)
            cpu += stack.cpu() - cpu_before
            if response.status_code != 200 or response.json().get("status") != "running":
                raise RuntimeError(f"deploy: HTTP {response.status_code} {response.text[:500]}")
            await _call(http, "POST", f"{path}/stop", key, 200)
    figures = {
        "deploy_p50_ms": percentile(deployed, 50) * 1000,
        "deploy_p99_ms": percentile(deployed, 99) * 1000,
        "read_p50_ms": percentile(read, 50) * 1000,
        "deploy_cpu_ms": cpu * 1000 / rounds,
    }
    say(f"  deploy p50 {figures['deploy_p50_ms']:.1f} ms (GET {figures['read_p50_ms']:.1f} ms)")
    return figures


def measure(options: argparse.Namespace, say: Progress, number: int) -> Run:
    """One whole measurement in a fresh directory (kept with its logs when it fails)."""
    with run_directory("lunogen-serve-bench-", keep=options.keep, say=say) as run_dir:
        return _measure_in(run_dir, options, say, number)


def _measure_in(run_dir: Path, options: argparse.Namespace, say: Progress, number: int) -> Run:
    load_before = load_average()
    machine_before = MachineCpu.now()
    with Processes() as processes:
        say(f"run {number}: starting the fake model (latency {options.model_latency_ms:g} ms)")
        model_url = start_fake_model(processes, options.model_latency_ms, run_dir / "model.log")
        port = free_port()
        stack = Stack(
            processes=processes,
            lunogen=_lunogen_executable(),
            run_dir=run_dir,
            env=_environment(options, run_dir, port, model_url),
            port=port,
        )
        say("preparing the data dir: db upgrade, models refresh, users, keys (CLI)")
        admin, user, migrate_seconds = prepare_data(stack)
        shape = "scaled: serve --no-worker + worker" if options.scaled else "embedded"
        say(f"starting lunogen serve ({shape}) on {stack.url}")
        healthy = stack.start_server(options)
        say(f"  healthy after {healthy:.2f} s")
        if options.scaled:
            say(f"starting {options.worker_processes} lunogen worker process(es)")
            stack.start_workers(options.worker_processes)
        try:
            figures, notes = _run_async(drive(options, stack, model_url, (admin, user), say))
        except Exception:
            print(stack.logs(), file=sys.stderr)
            raise
        say("stopping")
    figures["start_healthy_s"] = healthy
    figures["load_before"] = load_before
    figures["load_after"] = load_average()
    figures["machine_busy_pct"] = MachineCpu.now().busy_percent_since(machine_before)
    notes.append(f"lunogen db upgrade on the fresh database: {migrate_seconds:.2f} s")
    return Run(figures, notes)


def _run_async(work: Coroutine[Any, Any, tuple[dict[str, float], list[str]]]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


# -- report --------------------------------------------------------------------------------------


def print_run(run: Run, number: int) -> None:
    print(f"\nRun {number}")
    SCORES.print(run.figures, run.notes, width=52)


def summary(runs: list[Run]) -> dict[str, float]:
    return {f.key: spread(r.figures.get(f.key, math.nan) for r in runs).median for f in FIGURES}


def print_summary(runs: list[Run]) -> None:
    print(f"\nOver {len(runs)} runs: median (min-max)")
    for figure in FIGURES:
        values = spread(r.figures.get(figure.key, math.nan) for r in runs)
        shown = (
            f"{figure.shown(values.median)} ({figure.shown(values.low)}-"
            f"{figure.shown(values.high)}) {figure.unit}"
        ).rstrip()
        print(f"  {figure.label:<52} {shown:>28}  {SCORES.verdict(figure.key, values.median)}")


def _describe(options: argparse.Namespace) -> list[str]:
    facts = machine_facts()
    lines = [
        "Serve overhead (black-box): lunogen serve over loopback HTTP, "
        + ("scaled shape (PostgreSQL + Redis)" if options.scaled else "embedded shape (SQLite)"),
        "machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()),
        f"code: {_code(options)}",
        f"settings: {options.messages}-message conversation, {options.long_turns}-turn long "
        f"conversation (windows of {min(options.window, options.long_turns // 2)}), "
        f"{options.throughput_seconds:g} s per throughput level, {options.warmup} warm-up, "
        f"batches of {options.batch}, model latency {options.model_latency_ms:g} ms, "
        f"server workers {options.workers}"
        + (f", {options.worker_processes} worker process(es)" if options.scaled else ""),
    ]
    return lines


def _code(options: argparse.Namespace) -> str:
    if options.src:
        return f"lunogen from {Path(options.src).resolve() / 'src'} (--src)"
    return _git_state(Path(__file__).resolve().parent.parent)


def _git_state(root: Path) -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown (no git)"
    return f"commit {commit or '?'}" + (" with uncommitted changes" if dirty else "")


# -- options -------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Platform overhead of `lunogen serve`, measured black-box over real HTTP "
        "against a zero-latency fake model, with the baseline interleaved.",
        epilog="Full-run defaults: "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in FULL.items())
        + ". --quick: "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
        + ". Options given explicitly win over both. The scaled shape (--database-url with "
        "--redis-url) runs `lunogen serve --no-worker` and `lunogen worker` processes; its CPU "
        "and RSS figures cover those processes, not PostgreSQL or Redis.",
    )
    parser.add_argument("--messages", type=int, help="turns of the overhead conversation")
    parser.add_argument("--long-turns", type=int, help="turns of the long conversation")
    parser.add_argument("--window", type=int, help="first and last turns compared in it")
    parser.add_argument("--throughput-seconds", type=float, help="per sender count (1 and 8)")
    parser.add_argument("--warmup", type=int, help="unmeasured messages (and baseline calls)")
    parser.add_argument("--batch", type=int, help="calls per side before switching sides")
    parser.add_argument(
        "--soak",
        type=int,
        default=0,
        metavar="N",
        help="after the rest, N more messages from 8 senders with RSS sampled at every tenth",
    )
    parser.add_argument(
        "--deploys", type=int, help="deploy → running: stop/deploy rounds of a second agent"
    )
    parser.add_argument(
        "--thread-length",
        type=int,
        default=20,
        help="throughput: messages per contact before a sender moves to a new one",
    )
    parser.add_argument("--model-latency-ms", type=float, default=0.0, help="fake model latency")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run for CI: small counts, timings not gated"
    )
    parser.add_argument("--repeat", type=int, default=1, help="whole measurements to run")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target of issue 11 is missed"
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL (postgresql+asyncpg://...) of its own: scaled shape"
    )
    parser.add_argument("--redis-url", help="Redis for the scaled shape (with --database-url)")
    parser.add_argument(
        "--worker-processes", type=int, default=1, help="scaled shape: `lunogen worker` count"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="pass `--workers N` to lunogen serve (needs a serve that has the option)",
    )
    parser.add_argument(
        "--src",
        metavar="DIR",
        help="run the lunogen package of this source tree (DIR/src), e.g. a `git archive` "
        "export of a commit, instead of the working tree the virtualenv installs",
    )
    parser.add_argument(
        "--more-senders",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also measure throughput with N senders (e.g. 32, for the scaled shape's "
        "workers ratio, which 8 senders at a 200 ms model cannot show)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and the logs")
    options = parser.parse_args(argv)
    for key, value in (QUICK if options.quick else FULL).items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    if options.src and not (Path(options.src) / "src" / "lunogen").is_dir():
        parser.error(f"--src: no src/lunogen in {options.src}")
    if bool(options.database_url) != bool(options.redis_url):
        parser.error("the scaled shape needs both --database-url and --redis-url")
    options.scaled = bool(options.database_url)
    counts = (
        options.batch,
        options.window,
        options.repeat,
        options.worker_processes,
        options.deploys,
    )
    if options.messages < 2 or options.long_turns < 2 or min(counts) < 1:
        parser.error(
            "--messages and --long-turns need at least 2; --batch, --window, --repeat, "
            "--worker-processes and --deploys at least 1"
        )
    if options.workers > 1 and "--workers" not in _serve_help(options.src):
        parser.error("this `lunogen serve` has no --workers option yet (issue 11, item 3)")
    return options


@functools.cache
def _serve_help(src: str | None) -> str:
    """`lunogen serve --help` of the code measured (the working tree's, or `--src`'s)."""
    env = {**os.environ, "COLUMNS": "200"}
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve() / "src")
    done = subprocess.run(
        [str(_lunogen_executable()), "serve", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    exit_on_sigterm()
    say = Progress()
    description = _describe(options)
    for line in description:
        say(line)
    runs = []
    for number in range(1, options.repeat + 1):
        runs.append(measure(options, say, number))
    print("\n".join(description))
    for number, run in enumerate(runs, 1):
        print_run(run, number)
    figures = runs[0].figures if len(runs) == 1 else summary(runs)
    if len(runs) > 1:
        print_summary(runs)
    missed = SCORES.misses(figures)
    if options.json:
        payload = {
            "description": description,
            "options": {k: v for k, v in vars(options).items() if k != "database_url"},
            "runs": [{"figures": r.figures, "notes": r.notes} for r in runs],
            "summary": figures,
            "missed": missed,
        }
        Path(options.json).write_text(json.dumps(payload, indent=2) + "\n")
    return conclude(missed, len(TARGETS), quick=options.quick, check=options.check)


if __name__ == "__main__":
    run_main(main)
