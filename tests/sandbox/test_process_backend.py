"""The `process` backend (no isolation): the limits still hold."""

from __future__ import annotations

import time
import uuid

from tests.sandbox.conftest import LIMITS, Sandbox, running_with_marker

A = "agent-p"


async def test_runs_in_the_workspace_with_a_clean_environment(process_sandbox: Sandbox) -> None:
    edge = process_sandbox.edge
    assert edge.backend_name == "process" and edge.isolated is False
    result = await edge.run(
        A,
        ["/bin/sh", "-c", "pwd; echo $SKILL_X; env | wc -l"],
        limits=LIMITS,
        env={"SKILL_X": "1", "SECRET": "no"},
    )
    lines = result.stdout.decode().split()
    assert result.exit_code == 0
    assert lines[0] == str(edge.workspaces_dir / A)
    assert lines[1] == "1"
    assert int(lines[2]) <= 8  # PATH, HOME, TMPDIR, LANG, SKILL_X, PWD, SHLVL, _


async def test_wall_time(process_sandbox: Sandbox) -> None:
    limits = LIMITS.__class__(**{**LIMITS.__dict__, "wall_seconds": 1.0})
    marker = f"proc-sleep-{uuid.uuid4().hex}"
    started = time.monotonic()
    result = await process_sandbox.edge.run(
        A, ["/bin/sh", "-c", f"sleep 30 & sleep 31; echo {marker}"], limits=limits
    )
    assert result.limit_hit == "wall_time"
    assert result.exit_code is None
    assert time.monotonic() - started < 3.5
    assert running_with_marker(marker) == []


async def test_memory(process_sandbox: Sandbox) -> None:
    code = "x = [bytearray(16 * 1024 * 1024) for _ in range(64)]; print('allocated')"
    result = await process_sandbox.edge.run(A, ["python3", "-c", code], limits=LIMITS)
    assert b"allocated" not in result.stdout
    assert result.limit_hit == "memory"


async def test_fork_bound(process_sandbox: Sandbox) -> None:
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for i in range(500):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    pass\n"
        "print(n)\n"
    )
    result = await process_sandbox.edge.run(A, ["python3", "-c", code], limits=LIMITS)
    assert int(result.stdout) < LIMITS.processes
    assert result.limit_hit == "processes"


async def test_output_truncation(process_sandbox: Sandbox) -> None:
    result = await process_sandbox.edge.run(
        A,
        ["/bin/sh", "-c", "head -c 100000 /dev/zero; head -c 50000 /dev/zero >&2"],
        limits=LIMITS,
    )
    assert result.truncated
    assert len(result.stdout) == LIMITS.output_bytes == len(result.stderr)
    assert result.limit_hit == "output"
    assert result.exit_code == 0
