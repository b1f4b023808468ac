"""Platform overhead per message: inbound → reply in the embedded shape, against a bare model call.

    .venv/bin/python bench/turn_overhead.py                      # SQLite in a temporary directory
    .venv/bin/python bench/turn_overhead.py --messages 1000 --concurrency 1 8
    .venv/bin/python bench/turn_overhead.py --database-url postgresql+asyncpg://.../lg_bench
    .venv/bin/python bench/turn_overhead.py --profile turn.prof  # cProfile the first platform run

A zero-latency fake model (OpenAI-compatible chat completions) runs in a subprocess on 127.0.0.1,
so its CPU never competes with the platform for the GIL. Two measurements hit that same fake:

- baseline: `ModelClient.complete()` (the client the platform uses) calling it directly;
- platform: the real app built in-process (`create_app`, embedded job broker, SQLite or
  PostgreSQL), driven through `httpx.ASGITransport` with `POST /api/v1/agents/{id}/messages`,
  which stores the inbound message, runs the turn and returns the reply.

Overhead per message = end-to-end latency of that request - the baseline's median model call.
ARCHITECTURE.md budgets it at p50 ≤ 10 ms. The run always exits 0 unless `--check` is given,
which exits 1 when the p50 overhead (at the lowest concurrency measured) misses the target.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import math
import os
import platform
import pstats
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

TARGET_P50_OVERHEAD_MS = 10.0
MODEL = "openai/gpt-4o-mini"
INSTRUCTIONS = "You are the benchmark agent. Answer in one short sentence."
API_KEY = "sk-or-v1-bench-0000000000000000"
BASE_URL = "http://bench.local"
PASSWORD = "correct horse battery staple 42"
MAX_TOKENS = 256
# The Pro plan allows 2,000 requests per minute per key; spread the requests over enough keys
# that the limiter never refuses one (its cost is still measured: every request is counted).
REQUESTS_PER_KEY = 1_500
MAX_KEYS = 25  # the Pro plan's key limit
BENCH_CREDITS = 1_000_000  # far more than a run spends, so that no turn is refused


# -- the zero-latency fake model (runs in a subprocess) ------------------------------------------


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or [{}]
    last = messages[-1].get("content") if isinstance(messages[-1], dict) else ""
    text = f"echo: {last}" if isinstance(last, str) else "echo"
    prompt_tokens = sum(len(str(m.get("content") or "")) // 4 + 3 for m in messages)
    completion_tokens = len(text) // 4 + 1
    return {
        "id": "gen-" + secrets.token_hex(8),
        "provider": "Fake",
        "model": body.get("model") or MODEL,
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "native_finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": text, "refusal": None},
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost": 0.000001,
            "is_byok": False,
        },
    }


def serve_fake_model(latency_ms: float) -> None:
    """Answer every chat completion (at once by default); print the port, serve until killed."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": {"code": 400, "message": "bad JSON"}}, status_code=400)
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        return Response(json.dumps(_completion(body)), media_type="application/json")

    app = Starlette(routes=[Route("/api/v1/chat/completions", chat, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def fake_model(latency_ms: float) -> Iterator[str]:
    """Start the fake in a subprocess; yield its base URL (what `llm_base_url` is set to)."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-fake-model", "--model-latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError("the fake model server did not start")
        url = f"http://127.0.0.1:{int(line)}"
        _wait_listening(int(line))
        yield f"{url}/api/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError("the fake model server does not accept connections")


# -- measurements --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile, interpolated between the two nearest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Sample:
    """Latencies (seconds) of one phase, and the wall and CPU time (this process) it took."""

    latencies: list[float]
    wall_seconds: float
    cpu_seconds: float

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.wall_seconds if self.wall_seconds > 0 else math.inf

    def ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000

    @property
    def cpu_ms_each(self) -> float:
        return self.cpu_seconds * 1000 / len(self.latencies)


@dataclass
class Result:
    concurrency: int
    messages: int
    baseline_per_s: float
    baseline_p50_ms: float
    baseline_p99_ms: float
    baseline_cpu_ms: float  # CPU time of this process per call (client side only)
    platform_per_s: float
    platform_p50_ms: float
    platform_p99_ms: float
    platform_cpu_ms: float  # CPU time of this process per message (the whole app + client)
    overhead_p50_ms: float  # platform p50 - baseline p50
    overhead_p99_ms: float  # platform p99 - baseline p50
    ratio_p50: float
    target_met: bool
    phases_p50_ms: dict[str, float]  # accept / turn / deliver, from the messages' created_at
    sql_per_message: dict[str, tuple[float, float]]  # kind → (statements, ms) per message

    @classmethod
    def of(
        cls,
        concurrency: int,
        baseline: Sample,
        platform: Sample,
        phases: list[Phases],
        sql: SqlStats,
    ) -> Result:
        base_p50 = baseline.ms(50)
        count = len(platform.latencies)
        return cls(
            concurrency=concurrency,
            messages=count,
            baseline_per_s=baseline.per_second,
            baseline_p50_ms=base_p50,
            baseline_p99_ms=baseline.ms(99),
            baseline_cpu_ms=baseline.cpu_ms_each,
            platform_per_s=platform.per_second,
            platform_p50_ms=platform.ms(50),
            platform_p99_ms=platform.ms(99),
            platform_cpu_ms=platform.cpu_ms_each,
            overhead_p50_ms=platform.ms(50) - base_p50,
            overhead_p99_ms=platform.ms(99) - base_p50,
            ratio_p50=platform.ms(50) / max(base_p50, 1e-9),
            target_met=platform.ms(50) - base_p50 <= TARGET_P50_OVERHEAD_MS,
            phases_p50_ms={
                name: percentile([getattr(p, name) for p in phases], 50) * 1000
                for name in ("accept", "turn", "deliver")
            }
            if phases
            else {},
            sql_per_message={
                kind: (sql.counts[kind] / count, sql.seconds.get(kind, 0.0) * 1000 / count)
                for kind in sorted(sql.counts, key=lambda k: -sql.seconds.get(k, 0.0))
            },
        )


def _split(total: int, lanes: int) -> list[int]:
    return [total // lanes + (1 if lane < total % lanes else 0) for lane in range(lanes)]


async def _timed_lanes(
    counts: list[int], call: Callable[[int, int], Awaitable[None]], tick: Callable[[], None]
) -> Sample:
    """Run one lane per entry of `counts` at once; lane i makes counts[i] calls in a row."""
    latencies: list[float] = []

    async def lane(index: int, count: int) -> None:
        for n in range(count):
            started = time.perf_counter()
            await call(index, n)
            latencies.append(time.perf_counter() - started)
            tick()

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane(i, c) for i, c in enumerate(counts)))
    return Sample(latencies, time.perf_counter() - started, time.process_time() - cpu_started)


# -- the platform --------------------------------------------------------------------------------


@dataclass
class Phases:
    """Where one exchange's time went, split by the server's `created_at` of both messages."""

    accept: float  # request sent → inbound message stored
    turn: float  # inbound stored → reply stored (queue, lease, context, model call, writes)
    deliver: float  # reply stored → response received (commit, noticing the reply, response)


@dataclass
class Bench:
    http: Any  # httpx.AsyncClient on the app
    agent_id: str
    keys: list[str]
    thread_length: int
    sent: int = 0
    phases: list[Phases] = field(default_factory=list)

    def _auth(self) -> dict[str, str]:
        self.sent += 1
        return {"Authorization": f"Bearer {self.keys[self.sent % len(self.keys)]}"}

    async def say(self, lane: int, n: int, run: str) -> None:
        contact = f"{run}-lane{lane}-thread{n // self.thread_length}"
        sent_at = time.time()
        response = await self.http.post(
            f"/api/v1/agents/{self.agent_id}/messages",
            json={"text": f"Message {n} from {contact}", "contact": contact},
            headers=self._auth(),
        )
        received_at = time.time()
        body = response.json() if response.status_code == 200 else {}
        if body.get("status") != "answered":
            raise RuntimeError(f"no reply: HTTP {response.status_code} {response.text[:500]}")
        try:
            stored = datetime.fromisoformat(body["message"]["created_at"]).timestamp()
            replied = datetime.fromisoformat(body["reply"]["created_at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return  # the response shape changed: no phases, the latency still counts
        self.phases.append(Phases(stored - sent_at, replied - stored, received_at - replied))


@dataclass
class SqlStats:
    """Statements the app ran, by kind, with the time each took (including waiting for locks)."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    enabled: bool = False
    attached: bool = False

    def reset(self) -> None:
        self.counts.clear()
        self.seconds.clear()
        self.enabled = self.attached

    def attach(self, engine: Any) -> None:
        from sqlalchemy import event

        def before(conn: Any, *_args: Any) -> None:
            conn.info["bench_started"] = time.perf_counter()

        def after(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            # Statements on one connection never overlap; one already running when the listener
            # was attached has no start time and is left out.
            started = conn.info.pop("bench_started", None)
            if self.enabled and started is not None:
                kind = _statement_kind(statement)
                self.counts[kind] += 1
                self.seconds[kind] += time.perf_counter() - started

        def commit(_conn: Any) -> None:
            if self.enabled:
                self.counts["(commit)"] += 1

        event.listen(engine.sync_engine, "before_cursor_execute", before)
        event.listen(engine.sync_engine, "after_cursor_execute", after)
        event.listen(engine.sync_engine, "commit", commit)
        self.attached = True


def _statement_kind(statement: str) -> str:
    """`SELECT messages`, `INSERT agent_logs`, `BEGIN IMMEDIATE`, `SAVEPOINT`, ..."""
    words = statement.split()
    if not words:
        return "?"
    verb = words[0].upper()
    if verb == "BEGIN":
        return " ".join(words[:2]).upper()
    marker = {"SELECT": "FROM", "DELETE": "FROM", "INSERT": "INTO", "UPDATE": "UPDATE"}.get(verb)
    upper = [w.upper() for w in words]
    if marker in upper and upper.index(marker) + 1 < len(words):
        table = words[upper.index(marker) + 1].strip('"(').split(".")[-1].strip('"')
        return f"{verb} {table}"
    return verb


async def _create_user(app: Any, email: str) -> None:
    """Like `lunogen user create`: an active account with a password, on the Pro plan, with
    enough prepaid credits for the whole run (when the code has credits)."""
    from lunogen.account import service as accounts

    async with app.state.sessionmaker() as session:
        user = await accounts.create_user_admin(
            session, email=email, name="Bench", password=PASSWORD, role="user"
        )
        user.plan = "pro"
        await _grant_credits(session, user.id)
        await session.commit()


async def _grant_credits(session: Any, user_id: str) -> None:
    try:
        from lunogen.billing import ledger
        from lunogen.billing.units import credits_to_micro
    except ImportError:  # code from before prepaid credits
        return
    await ledger.ensure_account(session, user_id)
    await ledger.post(
        session,
        account_id=user_id,
        kind="grant",
        amount=credits_to_micro(BENCH_CREDITS),
        key=f"bench:{user_id}",
        description="Benchmark credits",
    )


async def _checked(response: Any, expected: int = 200) -> dict[str, Any]:
    if response.status_code != expected:
        raise RuntimeError(f"{response.request.url}: HTTP {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


async def _setup(app: Any, http: Any, *, keys: int, thread_length: int) -> Bench:
    """An account with `keys` API keys and a deployed agent, all but the account through HTTP."""
    email = f"bench-{secrets.token_hex(6)}@example.com"
    await _create_user(app, email)
    await _checked(
        await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    )
    csrf = {"X-CSRF-Token": http.cookies["lg_csrf"]}
    consent = {"age_confirmed": True, "accept_terms": True, "accept_privacy": True}
    await _checked(await http.post("/api/v1/auth/consent", json=consent, headers=csrf))
    plaintexts = []
    for n in range(keys):
        body = {"name": f"bench {n}", "scopes": ["full"]}
        created = await _checked(await http.post("/api/v1/keys", json=body, headers=csrf), 201)
        plaintexts.append(str(created["key"]))
    http.cookies.clear()  # from here on, requests authenticate with the keys only
    auth = {"Authorization": f"Bearer {plaintexts[0]}"}
    agent_body = {"name": "Bench agent", "model": MODEL, "instructions": INSTRUCTIONS}
    agent = await _checked(await http.post("/api/v1/agents", json=agent_body, headers=auth), 201)
    deployed = await _checked(await http.post(f"/api/v1/agents/{agent['id']}/deploy", headers=auth))
    if deployed.get("status") != "running":
        raise RuntimeError(f"the agent did not start: {deployed}")
    return Bench(http=http, agent_id=agent["id"], keys=plaintexts, thread_length=thread_length)


def _settings(options: argparse.Namespace, data_dir: Path, model_url: str) -> Any:
    from lunogen.config import Settings

    database_url = options.database_url or f"sqlite+aiosqlite:///{data_dir / 'lunogen.db'}"
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "redis_url": None,  # the embedded shape: in-process jobs and rate limits
        "public_url": BASE_URL,
        "log_json": False,
        "log_level": options.log_level,
        "smtp_url": None,
        "google_client_id": None,
        "google_client_secret": None,
        "catalog_refresh_hours": 0,
        "llm_base_url": model_url,
        "openrouter_api_key": API_KEY,
        "llm_api_style": "openrouter",
        "llm_max_retries": 0,  # a failed call is a failed benchmark, not a retry to time
    }
    return Settings(**values)


@asynccontextmanager
async def _running_app(settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    import httpx
    from asgi_lifespan import LifespanManager

    from lunogen.app import create_app

    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=120) as http:
            yield app, http


# -- the run -------------------------------------------------------------------------------------


class Progress:
    """A rich progress bar on stderr (silent when stderr is not a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
            refresh_per_second=4,  # the refresh thread shares the CPU with what is measured
        )

    def __enter__(self) -> Progress:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._progress.stop()

    def phase(self, description: str, total: int) -> Callable[[], None]:
        task = self._progress.add_task(description, total=total)
        return lambda: self._progress.advance(task)


async def _measure(options: argparse.Namespace, model_url: str, data_dir: Path) -> list[Result]:
    from lunogen.llm.provider import ModelClient

    settings = _settings(options, data_dir, model_url)
    levels = sorted(set(options.concurrency))
    total_requests = (options.warmup + options.messages) * len(levels)
    keys = min(MAX_KEYS, max(1, math.ceil(total_requests / REQUESTS_PER_KEY)))
    results: list[Result] = []
    profiled: cProfile.Profile | None = None
    with Progress() as progress:
        async with ModelClient.from_settings(settings) as client:

            async def model_call(lane: int, n: int) -> None:
                await client.complete(
                    model=MODEL,
                    messages=[
                        {"role": "system", "content": INSTRUCTIONS},
                        {"role": "user", "content": f"Message {n} from lane {lane}"},
                    ],
                    max_tokens=MAX_TOKENS,
                )

            baselines: dict[int, Sample] = {}
            for level in levels:
                tick = progress.phase(f"baseline: warm-up x{level}", options.warmup)
                await _timed_lanes(_split(options.warmup, level), model_call, tick)
                tick = progress.phase(f"baseline: model calls x{level}", options.messages)
                baselines[level] = await _timed_lanes(
                    _split(options.messages, level), model_call, tick
                )

        async with _running_app(settings) as (app, http):
            bench = await _setup(app, http, keys=keys, thread_length=max(1, options.thread_length))
            sql = SqlStats()
            if options.sql_stats:
                sql.attach(app.state.engine)
            for level in levels:

                async def warmup(lane: int, n: int, level: int = level) -> None:
                    await bench.say(lane, n, f"warmup{level}")

                async def message(lane: int, n: int, level: int = level) -> None:
                    await bench.say(lane, n, f"c{level}")

                tick = progress.phase(f"platform: warm-up x{level}", options.warmup)
                await _timed_lanes(_split(options.warmup, level), warmup, tick)
                tick = progress.phase(f"platform: messages x{level}", options.messages)

                bench.phases.clear()
                sql.reset()
                profiler = cProfile.Profile() if options.profile and profiled is None else None
                if profiler is not None:
                    profiler.enable()
                sample = await _timed_lanes(_split(options.messages, level), message, tick)
                if profiler is not None:
                    profiler.disable()
                    profiled = profiler
                sql.enabled = False
                results.append(Result.of(level, baselines[level], sample, bench.phases, sql))
    if profiled is not None:
        _report_profile(profiled, Path(options.profile))
    return results


def _report_profile(profiler: cProfile.Profile, path: Path) -> None:
    profiler.dump_stats(str(path))
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    print(text.getvalue(), file=sys.stderr)
    print(f"Profile written to {path} (timings above are inflated by cProfile)", file=sys.stderr)


def _machine(options: argparse.Namespace) -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loop": _loop_name(options.loop),
    }


def _loop_name(choice: str) -> str:
    """`auto` is what `lunogen serve` gets from uvicorn: uvloop when it is installed."""
    if choice != "auto":
        return str(choice)
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def _print(
    results: list[Result], options: argparse.Namespace, database: str, load_before: float
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    machine = _machine(options)
    console.print(
        f"[bold]Turn overhead[/bold] ({database}, {machine['cpus']} CPUs, "
        f"Python {machine['python']}, {machine['loop']})"
    )
    console.print(
        f"{options.messages} messages per run after {options.warmup} warm-up, "
        f"{options.thread_length} messages per thread, "
        f"fake model latency {options.model_latency_ms:g} ms"
    )
    console.print(
        f"load average (1 min) before {load_before:.2f}, after {_load():.2f}: other work on the "
        "machine shows up as noise"
    )
    if options.profile:
        console.print("[yellow]Profiled: the first run's timings are inflated.[/yellow]")
    console.print()
    for result in results:
        table = Table(title=f"concurrency {result.concurrency}", title_justify="left")
        for column in ("", "per s", "p50 ms", "p99 ms", "CPU ms each"):
            table.add_column(column, justify="left" if not column else "right")
        table.add_row(
            "baseline: model call direct",
            f"{result.baseline_per_s:.0f}",
            f"{result.baseline_p50_ms:.2f}",
            f"{result.baseline_p99_ms:.2f}",
            f"{result.baseline_cpu_ms:.2f}",
        )
        table.add_row(
            "platform: inbound → reply",
            f"{result.platform_per_s:.1f}",
            f"{result.platform_p50_ms:.2f}",
            f"{result.platform_p99_ms:.2f}",
            f"{result.platform_cpu_ms:.2f}",
        )
        table.add_row(
            "overhead: platform - baseline p50",
            "",
            f"{result.overhead_p50_ms:.2f}",
            f"{result.overhead_p99_ms:.2f}",
            f"{result.platform_cpu_ms - result.baseline_cpu_ms:.2f}",
        )
        console.print(table)
        verdict = "[green]met[/green]" if result.target_met else "[red]missed[/red]"
        console.print(
            f"ratio platform p50 / baseline p50: {result.ratio_p50:.1f}x; "
            f"target p50 overhead ≤ {TARGET_P50_OVERHEAD_MS:.0f} ms: {verdict}"
        )
        if result.phases_p50_ms:
            phases = result.phases_p50_ms
            console.print(
                f"phases p50 (server created_at): request → inbound stored "
                f"{phases['accept']:.1f} ms, → reply stored {phases['turn']:.1f} ms, "
                f"→ response {phases['deliver']:.1f} ms"
            )
        if result.sql_per_message:
            sql_table = Table(title="SQL per message", title_justify="left")
            for column in ("statement", "count", "ms"):
                sql_table.add_column(column, justify="left" if column == "statement" else "right")
            for kind, (count, ms) in result.sql_per_message.items():
                sql_table.add_row(kind, f"{count:.2f}", f"{ms:.2f}")
            total_count = sum(c for c, _ in result.sql_per_message.values())
            total_ms = sum(m for _, m in result.sql_per_message.values())
            sql_table.add_row("[bold]total[/bold]", f"{total_count:.1f}", f"{total_ms:.2f}")
            console.print(sql_table)
        console.print()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Platform overhead per message against a zero-latency fake model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=300, help="measured messages per run")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured messages first")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 8],
        help="contacts sending at once; one run per value",
    )
    parser.add_argument(
        "--thread-length",
        type=int,
        default=20,
        help="messages per contact before a lane moves to a new contact (history grows within)",
    )
    parser.add_argument(
        "--database-url", help="run against this database (default: SQLite in a temporary dir)"
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop (auto: uvloop when installed, as under `lunogen serve`)",
    )
    parser.add_argument("--log-level", default="WARNING", help="the app's log level")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the first platform run")
    parser.add_argument(
        "--sql-stats", action="store_true", help="count and time the app's SQL per message"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the p50 overhead target is missed"
    )
    parser.add_argument(
        "--model-latency-ms",
        type=float,
        default=0.0,
        help="make the fake model answer after this long (0: zero latency)",
    )
    parser.add_argument("--serve-fake-model", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.messages < 2 or options.warmup < 0:
        parser.error("--messages must be at least 2 and --warmup at least 0")
    if any(c < 1 or c > options.messages for c in options.concurrency):
        parser.error("each --concurrency must be between 1 and --messages")
    return options


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    if options.serve_fake_model:
        serve_fake_model(options.model_latency_ms)
        return 0
    from lunogen.migrations import upgrade

    load_before = _load()

    with (
        tempfile.TemporaryDirectory(prefix="lunogen-bench-") as tmp,
        fake_model(options.model_latency_ms) as model_url,
    ):
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        settings = _settings(options, data_dir, model_url)
        upgrade(settings.database_url)
        database = "PostgreSQL" if "postgres" in settings.database_url else "SQLite"
        if _loop_name(options.loop) == "uvloop":
            import uvloop

            results = uvloop.run(_measure(options, model_url, data_dir))
        else:
            results = asyncio.run(_measure(options, model_url, data_dir))
    _print(results, options, database, load_before)
    if options.json:
        payload = {
            "machine": _machine(options),
            "model_latency_ms": options.model_latency_ms,
            "database": database,
            "messages": options.messages,
            "warmup": options.warmup,
            "thread_length": options.thread_length,
            "profiled": bool(options.profile),
            "results": [asdict(r) for r in results],
            "target_p50_overhead_ms": TARGET_P50_OVERHEAD_MS,
        }
        Path(options.json).write_text(json.dumps(payload, indent=2) + "\n")
    first = results[0]
    return 1 if options.check and not first.target_met else 0


if __name__ == "__main__":
    sys.exit(main())
