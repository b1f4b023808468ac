"""Helpers for the black-box benchmarks: child processes, /proc figures, statistics, a fake model.

Run as a script, it serves the zero-latency fake model (what `start_fake_model` runs):

    python bench/_support.py fake-model [--latency-ms N] [--tool-steps N]

The fake answers `POST /api/v1/chat/completions` like OpenRouter (echoing the last message, with
`usage` and its `cost` priced from its own catalog) and `GET /api/v1/models` with that catalog.
With `--tool-steps N`, a request that offers tools is first answered with a call of the first
tool offered, until the turn has N tool results after its last user message: a turn then makes
N + 1 model calls. `GET /stats` counts the chat requests received (when they arrive, before the
latency), and per (last user message, tool results after it), i.e. per message and step.
It prints its port on the first line of its output, then serves until it is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

FAKE_MODEL_ID = "bench/echo-1"
FAKE_MODEL_KEY = "sk-or-v1-bench-0000000000000000"
# Priced like openai/gpt-4o-mini (USD per token), so that every call costs credits.
FAKE_PROMPT_PRICE = Decimal("0.00000015")
FAKE_COMPLETION_PRICE = Decimal("0.0000006")
FAKE_CONTEXT_LENGTH = 128_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_KIB = 1024


# -- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile, interpolated between the two nearest ranks (NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float


def spread(values: Iterable[float]) -> Spread:
    known = [v for v in values if not math.isnan(v)]
    if not known:
        return Spread(math.nan, math.nan, math.nan)
    return Spread(statistics.median(known), min(known), max(known))


# -- /proc -----------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_tree(roots: Iterable[int]) -> list[int]:
    """The roots and all their living descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.append(pid)
            pending.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes, with that of their reaped children."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:  # utime, stime, cutime, cstime are fields 14-17 of stat
            ticks += sum(int(fields[n]) for n in range(11, 15))
    return ticks / CLOCK_TICKS


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident set size (VmRSS) of these processes, summed."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * PAGE_KIB
    return total


@dataclass(frozen=True)
class MachineCpu:
    """Busy and total jiffies of all CPUs, from the first line of /proc/stat."""

    busy: int
    total: int

    @classmethod
    def now(cls) -> MachineCpu:
        try:
            first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return cls(0, 0)
        values = [int(v) for v in first[:8]]
        idle = values[3] + values[4]  # idle + iowait
        return cls(sum(values) - idle, sum(values))

    def busy_percent_since(self, earlier: MachineCpu) -> float:
        total = self.total - earlier.total
        return 100 * (self.busy - earlier.busy) / total if total > 0 else math.nan


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def machine_facts() -> dict[str, str]:
    facts = {
        "cpus": str(os.cpu_count()),
        "cpu model": _cpu_model(),
        "memory": _memory(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- child processes -----------------------------------------------------------------------------


@dataclass
class Processes:
    """Every process a benchmark starts, each in a session of its own, so that stopping one
    stops what it started too; `stop_all` (also on error or Ctrl-C) leaves none behind."""

    running: list[subprocess.Popen[Any]] = field(default_factory=list)
    logs: list[IO[Any]] = field(default_factory=list)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[str]:
        sink: IO[Any] | int = subprocess.DEVNULL
        if log is not None:
            sink = log.open("a")
            self.logs.append(sink)
        process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else sink,
            stderr=sink,
            text=True,
            start_new_session=True,
        )
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
        """SIGTERM its process group, then SIGKILL what is left after `timeout` seconds."""
        self._signal(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal(process, signal.SIGKILL)
            process.wait()
        self._signal(process, signal.SIGKILL)  # stragglers of its group, if any
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        """Stop the latest first: the platform before the fake model its turns still call."""
        for process in list(reversed(self.running)):
            self.stop(process, timeout=10.0)
        for sink in self.logs:
            sink.close()
        self.logs.clear()

    @staticmethod
    def _signal(process: subprocess.Popen[Any], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)  # its own session: the group id is its pid


def exit_on_sigterm() -> None:
    """Make SIGTERM and SIGHUP interrupt like Ctrl-C, so that `finally` blocks stop the
    children (and asyncio cancels its tasks cleanly)."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Progress:
    """One line per phase on stderr, with the time since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f} s] {text}", file=sys.stderr, flush=True)


# -- the fake model --------------------------------------------------------------------------------


def fake_catalog() -> dict[str, Any]:
    return {
        "data": [
            {
                "id": FAKE_MODEL_ID,
                "canonical_slug": FAKE_MODEL_ID,
                "name": "Bench: Echo 1",
                "created": 1760000000,
                "context_length": FAKE_CONTEXT_LENGTH,
                "architecture": {"modality": "text->text", "tokenizer": "Other"},
                "pricing": {
                    "prompt": str(FAKE_PROMPT_PRICE),
                    "completion": str(FAKE_COMPLETION_PRICE),
                    "request": "0",
                },
                "top_provider": {"context_length": FAKE_CONTEXT_LENGTH},
                "supported_parameters": ["max_tokens", "temperature", "tools"],
            }
        ]
    }


def turn_position(body: dict[str, Any]) -> tuple[str, int]:
    """The last user message's text and how many tool results follow it: which message of which
    thread this request answers, and at which step of its turn."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    tool_results = 0
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or ""), tool_results
        if message.get("role") == "tool":
            tool_results += 1
    return "", tool_results


def _tool_call(tool: dict[str, Any]) -> dict[str, Any]:
    """A call of `tool` (an OpenAI tool schema) with a short string for each required field."""
    function = tool.get("function") or {}
    required = (function.get("parameters") or {}).get("required") or []
    arguments = {name: "The bench user likes tea" for name in required}
    return {
        "id": "call_" + secrets.token_hex(8),
        "type": "function",
        "function": {"name": function.get("name", "?"), "arguments": json.dumps(arguments)},
    }


def fake_completion(body: dict[str, Any], tool_steps: int = 0) -> dict[str, Any]:
    """OpenRouter's non-streaming answer: the last message echoed, usage with its cost; or,
    while the turn has fewer than `tool_steps` tool results, a call of the first tool offered."""
    messages = body.get("messages") or [{}]
    last = messages[-1].get("content") if isinstance(messages[-1], dict) else ""
    text = f"echo: {last}" if isinstance(last, str) else "echo"
    tools = body.get("tools") or []
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    finish_reason = "stop"
    if tools and turn_position(body)[1] < tool_steps:
        call = _tool_call(tools[0])
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        finish_reason = "tool_calls"
        text = call["function"]["arguments"]
    prompt_tokens = sum(3 + len(str(m.get("content") or "")) // 4 for m in messages)
    completion_tokens = 1 + len(text) // 4
    cost = prompt_tokens * FAKE_PROMPT_PRICE + completion_tokens * FAKE_COMPLETION_PRICE
    return {
        "id": "gen-" + secrets.token_hex(12),
        "provider": "Fake",
        "model": body.get("model") or FAKE_MODEL_ID,
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": finish_reason,
                "native_finish_reason": finish_reason,
                "message": message,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
            "cost": float(cost),
            "is_byok": False,
        },
    }


def serve_fake_model(latency_ms: float, tool_steps: int = 0) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def error(status: int, message: str) -> Response:
        return JSONResponse({"error": {"code": status, "message": message}}, status_code=status)

    calls = 0
    per_step: dict[str, int] = {}  # "<step>:<last user message>" → requests

    async def chat(request: Request) -> Response:
        nonlocal calls
        if request.headers.get("authorization") != f"Bearer {FAKE_MODEL_KEY}":
            return error(401, "No auth credentials found")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "Invalid JSON")
        if not isinstance(body, dict) or not body.get("messages"):
            return error(400, "Input required: specify `model` and a non-empty `messages`")
        if body.get("stream"):
            return error(400, "The bench fake does not stream")
        calls += 1
        text, step = turn_position(body)
        per_step[f"{step}:{text}"] = per_step.get(f"{step}:{text}", 0) + 1
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        return Response(
            json.dumps(fake_completion(body, tool_steps)), media_type="application/json"
        )

    async def models(_request: Request) -> Response:
        return JSONResponse(fake_catalog())

    async def stats(_request: Request) -> Response:
        return JSONResponse({"calls": calls, "per_step": per_step})

    app = Starlette(
        routes=[
            Route("/api/v1/chat/completions", chat, methods=["POST"]),
            Route("/api/v1/models", models, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def start_fake_model(
    processes: Processes, latency_ms: float, log: Path, *, tool_steps: int = 0
) -> str:
    """Start the fake in its own process; return its API base URL (`.../api/v1`; its counters
    are at `/stats` of the same host)."""
    argv = [sys.executable, __file__, "fake-model", "--latency-ms", str(latency_ms)]
    process = processes.start(
        [*argv, "--tool-steps", str(tool_steps)],
        log=log,
        stdout_pipe=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.isdigit():
        raise RuntimeError(f"the fake model did not start:\n{tail(log)}")
    port = int(line)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}/api/v1"
        time.sleep(0.02)
    raise RuntimeError("the fake model does not accept connections")


@dataclass(frozen=True)
class Figure:
    """One figure a bench prints: its key in the run's figures, label, unit and decimals."""

    key: str
    label: str
    unit: str
    digits: int = 1

    def shown(self, value: float) -> str:
        return "-" if math.isnan(value) else f"{value:,.{self.digits}f}"


@dataclass(frozen=True)
class Target:
    text: str
    met: Callable[[float], bool]


@dataclass(frozen=True)
class Scorecard:
    """A bench's figures and the targets some of them have."""

    figures: list[Figure]
    targets: dict[str, Target]

    def verdict(self, key: str, value: float) -> str:
        target = self.targets.get(key)
        if target is None:
            return ""
        return f"target {target.text}: " + ("met" if target.met(value) else "MISSED")

    def print(self, values: dict[str, float], notes: list[str], *, width: int) -> None:
        for figure in self.figures:
            value = values.get(figure.key, math.nan)
            shown = f"{figure.shown(value)} {figure.unit}".rstrip()
            print(f"  {figure.label:<{width}} {shown:>14}  {self.verdict(figure.key, value)}")
        for note in notes:
            print(f"  {note}")

    def misses(self, values: dict[str, float]) -> list[str]:
        missed = []
        for key, target in self.targets.items():
            value = values.get(key, math.nan)
            if math.isnan(value) or not target.met(value):
                label = next(f.label for f in self.figures if f.key == key)
                missed.append(f"{label}: {value:,.2f}, target {target.text}")
        return missed


@contextlib.contextmanager
def run_directory(prefix: str, *, keep: bool, say: Callable[[str], None]) -> Iterator[Path]:
    """A fresh directory for one measurement: removed afterwards, unless `keep` is set or the
    measurement failed (its data and logs are kept then, and said where)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except Exception:
        keep = True
        raise
    finally:
        if keep:
            say(f"data and logs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def conclude(missed: list[str], targets: int, *, quick: bool, check: bool) -> int:
    """Print the targets missed (or that all were met) and return the exit code: 1 on a miss
    with `--check`, never in a `--quick` smoke run."""
    print()
    if missed:
        print(f"Targets missed ({len(missed)} of {targets}):")
        for line in missed:
            print(f"  - {line}")
    else:
        print(f"Every target met ({targets}).")
    if quick:
        print("--quick: a smoke run; targets are reported, not gated.")
        return 0
    return 1 if check and missed else 0


def run_main(main: Callable[[], int]) -> NoReturn:
    """`sys.exit(main())`, saying on Ctrl-C that the run's processes were stopped."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process this run started has been stopped", file=sys.stderr)
        sys.exit(130)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark helpers.")
    commands = parser.add_subparsers(dest="command", required=True)
    fake = commands.add_parser("fake-model", help="serve the zero-latency fake model")
    fake.add_argument("--latency-ms", type=float, default=0.0, help="answer after this long")
    fake.add_argument(
        "--tool-steps", type=int, default=0, help="tool calls per turn before the text answer"
    )
    options = parser.parse_args(argv)
    if options.command == "fake-model":
        serve_fake_model(options.latency_ms, options.tool_steps)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
