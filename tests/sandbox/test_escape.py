"""The escape suite: every isolating backend must deny or stop each attempt, leave the platform
unharmed, and log the run. Backend-agnostic: expectations accept what each backend legitimately
returns (e.g. a killed run reports a signal, not an exit code)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

from lunogen.sandbox import RunResult, WorkspaceError, WorkspacePathError
from tests.sandbox.conftest import DB_SENTINEL, KEY_SENTINEL, LIMITS, Sandbox, running_with_marker
from tests.sandbox.support import mounts_under

A = "agent-a"
B = "agent-b"


def py(code: str) -> list[str]:
    return ["python3", "-c", code]


async def test_echo_round_trip_env_and_log(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUNOGEN_HOST_ONLY", "host-env-must-not-leak")
    result = await sandbox.edge.run(
        A,
        ["/bin/sh", "-c", "read x; echo got:$x; echo skill=$SKILL_MODE; env; pwd; echo $HOME"],
        limits=LIMITS,
        stdin=b"hello\n",
        env={"SKILL_MODE": "fast", "AWS_SECRET_ACCESS_KEY": "nope", "LD_PRELOAD": "/x.so"},
    )
    logs = sandbox.logs
    out = result.stdout.decode()
    assert result.exit_code == 0, result
    assert "got:hello" in out
    assert "skill=fast" in out
    assert "host-env-must-not-leak" not in out
    assert "AWS_SECRET_ACCESS_KEY" not in out and "LD_PRELOAD" not in out
    assert "/workspace\n/workspace" in out
    assert result.limit_hit is None
    runs = [e for e in logs if e["event"] == "sandbox.run"]
    assert len(runs) == 1
    assert runs[0]["agent_id"] == A
    assert runs[0]["backend"] == sandbox.name
    assert runs[0]["exit_code"] == 0
    assert runs[0]["limit_hit"] is None
    assert runs[0]["duration_ms"] > 0
    dropped = [e for e in logs if e["event"] == "sandbox.env_dropped"]
    assert dropped and dropped[0]["names"] == ["AWS_SECRET_ACCESS_KEY", "LD_PRELOAD"]


async def test_cannot_read_etc_shadow(sandbox: Sandbox) -> None:
    result = await sandbox.edge.run(A, ["cat", "/etc/shadow"], limits=LIMITS)
    assert result.exit_code != 0
    assert b"root:" not in result.stdout
    listing = await sandbox.edge.run(A, ["ls", "/etc"], limits=LIMITS)
    assert b"shadow" not in listing.stdout
    assert b"gshadow" not in listing.stdout


END = "END-OF-SCAN"


def _assert_scanned(result: RunResult) -> None:
    """The scan ran to its end: not cut short by a limit, so what it did not print, it did not
    find."""
    assert result.limit_hit is None, result
    assert result.exit_code == 0, result
    assert result.stdout.endswith(f"{END}\n".encode()), result


async def test_cannot_read_data_dir_or_database(sandbox: Sandbox) -> None:
    before = sandbox.host_snapshot()
    db, key, data = sandbox.database, sandbox.secret_key, sandbox.data_dir
    workspaces = sandbox.edge.workspaces_dir
    script = (
        f"cat {db}; cat {key}; ls -la {data}; "
        "cat /workspace/../lunogen.db; cat /workspace/../../lunogen.db; "
        "cat /workspace/../secret.key; "
        # Every process's root: one that were the host's would show the host paths.
        f'for r in /proc/[0-9]*/root; do cat "$r{db}" "$r{key}"; ls "$r{data}"; done; '
        "find /workspace/.. -maxdepth 3 -name lunogen.db; "
        f"find /run /tmp {workspaces} {data} -name lunogen.db; "
        f"echo {END}"
    )
    result = await sandbox.edge.run(A, ["/bin/sh", "-c", f"({script}) 2>/dev/null"], limits=LIMITS)
    _assert_scanned(result)
    assert b"lunogen-db-sentinel" not in result.stdout
    assert KEY_SENTINEL.encode() not in result.stdout
    assert b"lunogen.db" not in result.stdout
    assert sandbox.host_snapshot() == before


async def test_cannot_read_another_agents_workspace(sandbox: Sandbox) -> None:
    secret = f"b-private-{uuid.uuid4().hex}"
    await sandbox.edge.write_file(B, "notes/secret.txt", secret.encode(), limits=LIMITS)
    b_root = sandbox.edge.workspaces_dir / B
    # The pattern is given in two halves, so the script's own text never matches it.
    half = len(secret) // 2
    pattern = f'"{secret[:half]}""{secret[half:]}"'
    script = (
        f"cat {b_root}/notes/secret.txt; cat /workspace/../{B}/notes/secret.txt; "
        f'for r in /proc/[0-9]*/root; do cat "$r{b_root}/notes/secret.txt"; done; '
        f"ls /workspace/..; grep -rs {pattern} /workspace/.. --exclude-dir=proc "
        "--exclude-dir=usr --exclude-dir=sys --exclude-dir=dev | head -1; "
        f"grep -rs {pattern} /run /tmp {sandbox.edge.workspaces_dir} {sandbox.data_dir} | head -1; "
        f"echo {END}"
    )
    result = await sandbox.edge.run(A, ["/bin/sh", "-c", f"({script}) 2>/dev/null"], limits=LIMITS)
    _assert_scanned(result)
    assert secret.encode() not in result.stdout
    assert B.encode() not in result.stdout
    assert await sandbox.edge.read_file(B, "notes/secret.txt", max_bytes=1000) == secret.encode()


async def test_no_network_to_host_or_outside(sandbox: Sandbox) -> None:
    accepted: list[bool] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(True)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = (
        "import socket\n"
        f"for host, port in (('127.0.0.1', {port}), ('1.1.1.1', 53), ('8.8.8.8', 443)):\n"
        "    s = socket.socket()\n"
        "    s.settimeout(3)\n"
        "    try:\n"
        "        s.connect((host, port))\n"
        "        print('CONNECTED', host)\n"
        "    except OSError as e:\n"
        "        print('blocked', host, e)\n"
    )
    try:
        result = await sandbox.edge.run(A, py(code), limits=LIMITS)
    finally:
        server.close()
        await server.wait_closed()
    assert b"CONNECTED" not in result.stdout, result.stdout
    assert result.stdout.count(b"blocked") == 3, result
    assert accepted == []


async def test_fork_bomb_is_stopped_by_the_process_limit(sandbox: Sandbox) -> None:
    marker = f"forkbomb-{uuid.uuid4().hex}"
    code = (
        f"# {marker}\n"
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('fork failed after', n, e.errno)\n"
        "print('spawned', n)\n"
    )
    started = time.monotonic()
    result = await sandbox.edge.run(A, py(code), limits=LIMITS)
    assert time.monotonic() - started < LIMITS.wall_seconds
    assert b"fork failed after" in result.stdout, result
    spawned = int(result.stdout.split(b"spawned")[1].split()[0])
    assert spawned <= LIMITS.processes
    assert result.limit_hit == "processes"
    await asyncio.sleep(0.2)
    assert running_with_marker(marker) == []  # nothing left running on the host


async def test_memory_past_the_limit_is_stopped(sandbox: Sandbox) -> None:
    code = (
        "chunks = []\n"
        "for i in range(64):\n"
        "    chunks.append(bytearray(16 * 1024 * 1024))\n"
        "print('allocated all')\n"
    )
    result = await sandbox.edge.run(A, py(code), limits=LIMITS)
    assert b"allocated all" not in result.stdout
    assert result.exit_code != 0
    assert result.limit_hit == "memory", result


async def test_disk_quota_is_enforced(sandbox: Sandbox) -> None:
    quota = LIMITS.workspace_mb * 1024 * 1024
    code = (
        "import os\n"
        "os.makedirs('fill', exist_ok=True)\n"
        "block = b'x' * (1024 * 1024)\n"
        "for i in range(200):\n"
        "    with open(f'fill/{i}.bin', 'wb') as f:\n"
        "        f.write(block)\n"
        "        f.flush()\n"
        "        os.fsync(f.fileno())\n"
        "print('wrote everything')\n"
    )
    result = await sandbox.edge.run(A, py(code), limits=LIMITS)
    assert result.limit_hit == "disk_quota", result
    assert b"wrote everything" not in result.stdout
    used = sandbox.edge.workspace_usage(A)
    assert used < 200 * 1024 * 1024
    # At the quota: the platform refuses a write past it, and one big file cannot pass it either
    # (its size limit is what is left of the quota). A kernel-enforced workspace may keep a
    # little room that small writes can still use.
    assert used >= quota - 2 * 1024 * 1024, used
    with pytest.raises(WorkspaceError, match="quota"):
        await sandbox.edge.write_file(A, "more.txt", b"x" * (quota - used + 1), limits=LIMITS)
    big = await sandbox.edge.run(
        A,
        py("open('big.bin', 'wb').write(b'x' * (64 * 1024 * 1024)); print('big written')"),
        limits=LIMITS,
    )
    assert b"big written" not in big.stdout
    assert big.limit_hit == "disk_quota", big


async def test_single_file_size_limit(sandbox: Sandbox) -> None:
    code = "open('big.bin', 'wb').write(b'x' * (8 * 1024 * 1024)); print('done')"
    result = await sandbox.edge.run(A, py(code), limits=LIMITS)
    assert b"done" not in result.stdout
    assert result.limit_hit == "file_size", result
    big = sandbox.edge.workspaces_dir / A / "big.bin"
    assert big.stat().st_size <= LIMITS.file_size_mb * 1024 * 1024


async def test_wall_time_kills_the_run_on_time(sandbox: Sandbox) -> None:
    limits = LIMITS.__class__(**{**LIMITS.__dict__, "wall_seconds": 1.5})
    marker = f"sleeper-{uuid.uuid4().hex}"
    started = time.monotonic()
    result = await sandbox.edge.run(
        A, ["/bin/sh", "-c", f"echo start; sleep 30 & sleep 30; echo {marker}"], limits=limits
    )
    elapsed = time.monotonic() - started
    assert result.limit_hit == "wall_time"
    assert result.exit_code is None
    assert b"start" in result.stdout and marker.encode() not in result.stdout
    assert 1.4 <= elapsed < 1.5 + 2.5, elapsed
    await asyncio.sleep(0.2)
    assert running_with_marker(marker) == []


async def test_cpu_time_limit(sandbox: Sandbox) -> None:
    limits = LIMITS.__class__(**{**LIMITS.__dict__, "cpu_seconds": 1, "wall_seconds": 10})
    result = await sandbox.edge.run(A, py("while True: pass"), limits=limits)
    assert result.limit_hit == "cpu_time", result
    assert result.exit_code is None


async def test_writes_outside_the_workspace_fail(sandbox: Sandbox) -> None:
    before = sandbox.host_snapshot()
    name = f"lunogen-escape-{uuid.uuid4().hex}"
    script = (
        f"echo x > /usr/{name} || echo usr-denied; "
        f"echo x > /etc/{name} || echo etc-denied; "
        f"echo x > /{name} || echo root-denied; "
        f"echo x > /tmp/{name} && echo tmp-private; "
        f"echo pwned > {sandbox.database} || echo db-denied; "
        f"echo ok > /workspace/{name} && echo workspace-ok"
    )
    result = await sandbox.edge.run(A, ["/bin/sh", "-c", script], limits=LIMITS)
    out = result.stdout.decode()
    for word in ("usr-denied", "etc-denied", "root-denied", "db-denied", "workspace-ok"):
        assert word in out, out
    for path in (f"/usr/{name}", f"/etc/{name}", f"/{name}", f"/tmp/{name}"):
        assert not Path(path).exists(), path  # /tmp inside is private to the run
    assert sandbox.host_snapshot() == before
    assert await sandbox.edge.read_file(A, name, max_bytes=10) == b"ok\n"


@pytest.mark.parametrize(
    "path", ["../x", "../../etc/passwd", "/etc/passwd", "a/../../x", "/workspace/../x", "\x00"]
)
async def test_path_traversal_through_file_tools(sandbox: Sandbox, path: str) -> None:
    await sandbox.edge.provision(A, limits=LIMITS)
    with pytest.raises(WorkspacePathError):
        await sandbox.edge.read_file(A, path, max_bytes=100)
    with pytest.raises(WorkspacePathError):
        await sandbox.edge.write_file(A, path, b"pwned", limits=LIMITS)
    with pytest.raises(WorkspacePathError):
        await sandbox.edge.list_files(A, path)


async def test_symlink_escapes_made_inside_the_sandbox(sandbox: Sandbox) -> None:
    before = sandbox.host_snapshot()
    await sandbox.edge.write_file(B, "secret.txt", b"b-secret", limits=LIMITS)
    script = (
        "ln -s /etc/passwd passwd-link; "
        f"ln -s {sandbox.database} db-link; "
        f"ln -s {sandbox.data_dir} data-link; "
        "ln -s ../.. up-link; "
        f"ln -s ../{B} b-link; "
        "mkdir -p real && echo inside > real/file.txt && ln -s /workspace/real inner-link; "
        "ls -la"
    )
    result = await sandbox.edge.run(A, ["/bin/sh", "-c", script], limits=LIMITS)
    assert result.exit_code == 0, result
    edge = sandbox.edge
    for path in (
        "passwd-link",
        "db-link",
        "data-link/lunogen.db",
        "up-link/lunogen.db",
        "b-link/secret.txt",
    ):
        with pytest.raises(WorkspacePathError):
            await edge.read_file(A, path, max_bytes=1000)
    for path in ("db-link", "data-link/new.txt", "up-link/x", "b-link/secret.txt"):
        with pytest.raises(WorkspacePathError):
            await edge.write_file(A, path, b"pwned", limits=LIMITS)
    for path in ("data-link", "up-link", "b-link"):
        with pytest.raises(WorkspacePathError):
            await edge.list_files(A, path)
    # A link that stays inside the workspace is fine.
    assert await edge.read_file(A, "inner-link/file.txt", max_bytes=100) == b"inside\n"
    listed = {e.path for e in await edge.list_files(A, ".", recursive=True)}
    assert {"db-link", "real/file.txt", "inner-link"} <= listed
    assert sandbox.host_snapshot() == before
    assert await edge.read_file(B, "secret.txt", max_bytes=100) == b"b-secret"


async def test_setuid_binaries_do_not_escalate(sandbox: Sandbox) -> None:
    script = (
        "id -u; grep CapEff /proc/self/status; "
        "su -c 'id -u' root </dev/null && echo SU-WORKED; "
        "mount -t tmpfs none /mnt 2>/dev/null && echo MOUNT-WORKED; "
        "cat /proc/1/environ >/dev/null 2>&1; true"
    )
    result = await sandbox.edge.run(A, ["/bin/sh", "-c", script], limits=LIMITS)
    out = result.stdout.decode()
    assert "SU-WORKED" not in out and "MOUNT-WORKED" not in out
    uid = int(out.split()[0])
    capeff = out.split("CapEff:")[1].split()[0]
    assert int(capeff, 16) == 0
    if uid == 0:  # root inside a user namespace is acceptable only without capabilities
        assert sandbox.name != "bwrap"
    # The host identity of the sandbox is never the platform's root.
    assert result.exit_code == 0


async def test_new_namespaces_are_denied(sandbox: Sandbox) -> None:
    script = (
        "unshare -U true && echo USERNS-WORKED; "
        "unshare -n true && echo NETNS-WORKED; "
        "unshare -m true && echo MOUNTNS-WORKED; true"
    )
    result = await sandbox.edge.run(A, ["/bin/sh", "-c", script], limits=LIMITS)
    assert b"WORKED" not in result.stdout, result


# gVisor implements ptrace inside its own user-space kernel: tracing a sandboxed process there
# reaches nothing of the host, so only bwrap must refuse the syscall itself.
PTRACE_REFUSED = {"bwrap"}


async def test_ptrace_is_denied(sandbox: Sandbox) -> None:
    code = (
        "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(5); os._exit(0)\n"
        "r = libc.ptrace(16, pid, 0, 0)\n"  # PTRACE_ATTACH
        "print('attach', r, ctypes.get_errno())\n"
        "os.kill(pid, 9)\n"
    )
    result = await sandbox.edge.run(A, py(code), limits=LIMITS)
    assert b"attach" in result.stdout, result
    status = result.stdout.split()
    if sandbox.name in PTRACE_REFUSED:
        assert status[1] == b"-1" and status[2] == b"1", result.stdout  # EPERM
    # The platform (this test's process) is never visible to trace: whatever its pid names in
    # the sandbox's /proc, it is not this process.
    with open("/proc/self/cmdline", "rb") as handle:
        own_cmdline = handle.read()
    peek = await sandbox.edge.run(
        A, ["/bin/sh", "-c", f"cat /proc/{os.getpid()}/cmdline; echo; echo {END}"], limits=LIMITS
    )
    assert peek.stdout.endswith(f"{END}\n".encode()), peek
    assert own_cmdline not in peek.stdout


async def test_output_is_capped(sandbox: Sandbox) -> None:
    result = await sandbox.edge.run(
        A, py("import sys; sys.stdout.write('y' * 1_000_000); print('end')"), limits=LIMITS
    )
    assert result.truncated
    assert len(result.stdout) == LIMITS.output_bytes
    assert result.exit_code == 0
    assert result.limit_hit == "output"


async def test_twenty_runs_in_parallel(sandbox: Sandbox) -> None:
    agents = [f"par-{i}" for i in range(20)]
    tokens = {agent: uuid.uuid4().hex for agent in agents}

    async def one(agent: str) -> tuple[str, bytes]:
        result = await sandbox.edge.run(
            agent,
            ["/bin/sh", "-c", "echo $SKILL_TOKEN > mine.txt; ls /workspace; cat mine.txt"],
            limits=LIMITS,
            env={"SKILL_TOKEN": tokens[agent]},
        )
        assert result.exit_code == 0, result
        return agent, result.stdout

    results = await asyncio.gather(*(one(agent) for agent in agents))
    for agent, stdout in results:
        assert stdout == f"mine.txt\n{tokens[agent]}\n".encode()
        data = await sandbox.edge.read_file(agent, "mine.txt", max_bytes=100)
        assert data == f"{tokens[agent]}\n".encode()


async def test_destroy_removes_the_workspace(sandbox: Sandbox) -> None:
    await sandbox.edge.run(
        A, ["/bin/sh", "-c", "mkdir -p d/e && echo x > d/e/f && chmod 000 d"], limits=LIMITS
    )
    assert (sandbox.edge.workspaces_dir / A).exists()
    await sandbox.edge.destroy(A)
    assert not (sandbox.edge.workspaces_dir / A).exists()
    assert mounts_under(sandbox.edge.workspaces_dir) == []
    assert list((sandbox.edge.workspaces_dir / ".images").glob(f"{A}*")) == []
    await sandbox.edge.destroy(A)  # idempotent
    assert sandbox.database.read_bytes() == DB_SENTINEL
