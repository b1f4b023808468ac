"""The gVisor backend on its own: the run contract, its limits, and its cleanup (no container
state, cgroup or bundle left). Skipped, with the reason, where runsc cannot run (failed instead
when LUNOGEN_TEST_REQUIRE_SANDBOXES names gvisor)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from lunogen.sandbox.base import RunResult, SandboxLimits
from lunogen.sandbox.gvisor import GVisorBackend
from lunogen.sandbox.limits import CGROUP_PARENT, CGROUP_ROOT
from tests.sandbox.support import unavailable

REASON = GVisorBackend.unavailable_reason()


@pytest.fixture(autouse=True)
def gvisor_runs_here() -> None:
    if REASON is not None:
        unavailable("gvisor", REASON)


LIMITS = SandboxLimits(
    cpu_seconds=10,
    memory_mb=128,
    processes=32,
    open_files=128,
    file_size_mb=4,
    workspace_mb=16,
    wall_seconds=15,
    output_bytes=16_000,
)


@pytest.fixture(scope="module")
def backend() -> GVisorBackend:
    if REASON is not None:
        unavailable("gvisor", REASON)
    return GVisorBackend()


@pytest.fixture
def workspace(tmp_path: Path, backend: GVisorBackend) -> Path:
    root = tmp_path / f"agent-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o700)
    return root


def _containers(backend: GVisorBackend) -> str:
    done = subprocess.run(
        [backend.binary, "--root", str(backend.state_dir), "list", "--quiet"],
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def _assert_cleaned(backend: GVisorBackend, run_id: str) -> None:
    assert backend.state_files(f"lunogen-{run_id}") == []
    assert f"lunogen-{run_id}" not in _containers(backend)
    assert not list(backend.bundles_dir.glob(f"{run_id}-*"))
    for controller in ("memory", "pids", "cpuacct"):
        assert not (CGROUP_ROOT / controller / CGROUP_PARENT / f"gvisor-{run_id}").exists()


async def _run(
    backend: GVisorBackend,
    workspace: Path,
    argv: list[str],
    *,
    limits: SandboxLimits = LIMITS,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    run_id: str | None = None,
) -> RunResult:
    run_id = run_id or uuid.uuid4().hex
    result = await backend.run(workspace, argv, limits=limits, stdin=stdin, env=env, run_id=run_id)
    _assert_cleaned(backend, run_id)
    return result


def py(code: str) -> list[str]:
    return ["python3", "-c", code]


async def test_echo_round_trip_with_stdin_and_env(backend: GVisorBackend, workspace: Path) -> None:
    result = await _run(
        backend,
        workspace,
        ["/bin/sh", "-c", "read x; echo got:$x; echo $MODE; env | sort; echo oops >&2; exit 3"],
        stdin=b"hello\n",
        env={"MODE": "fast"},
    )
    assert result.exit_code == 3
    out = result.stdout.decode()
    assert "got:hello\nfast\n" in out
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert names <= {"MODE", "PATH", "HOME", "LANG", "TMPDIR", "USER", "PWD", "SHLVL", "_"}
    assert "HOME=/workspace" in out and "TMPDIR=/tmp" in out and "LANG=C.UTF-8" in out
    assert result.stderr == b"oops\n"
    assert result.limit_hit is None and not result.truncated


async def test_workspace_is_cwd_and_writes_reach_the_host(
    backend: GVisorBackend, workspace: Path
) -> None:
    (workspace / "given.txt").write_text("from host")
    uid, gid = backend.workspace_owner(workspace)
    result = await _run(
        backend,
        workspace,
        ["/bin/sh", "-c", "pwd; cat given.txt; echo; mkdir -p d && echo made > d/out.txt; ls"],
    )
    assert result.exit_code == 0, result
    assert result.stdout.decode().splitlines() == ["/workspace", "from host", "d", "given.txt"]
    made = workspace / "d" / "out.txt"
    assert made.read_text() == "made\n"
    assert (made.stat().st_uid, made.stat().st_gid) == (uid, gid)


async def test_unprivileged_without_capabilities(backend: GVisorBackend, workspace: Path) -> None:
    result = await _run(
        backend,
        workspace,
        [
            "/bin/sh",
            "-c",
            "id -u; grep -E 'Cap(Eff|Prm|Bnd)' /proc/self/status; python3 -c "
            "'import ctypes; print(\"NoNewPrivs:\", ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))'",
        ],
    )
    lines = result.stdout.decode().split()
    assert int(lines[0]) == backend.workspace_owner(workspace)[0] != 0
    status = dict(zip(lines[1::2], lines[2::2], strict=True))
    assert int(status["CapEff:"], 16) == 0
    assert int(status["CapPrm:"], 16) == 0
    assert int(status["CapBnd:"], 16) == 0
    assert status["NoNewPrivs:"] == "1"


async def test_host_secrets_and_system_dirs(backend: GVisorBackend, workspace: Path) -> None:
    result = await _run(
        backend,
        workspace,
        [
            "/bin/sh",
            "-c",
            "cat /etc/shadow || echo no-shadow; ls /etc; ls /; "
            "echo x > /usr/pwned || echo usr-ro; echo x > /etc/pwned || echo etc-ro; "
            "echo x > /tmp/mine && echo tmp-ok",
        ],
    )
    out = result.stdout.decode()
    assert "root:" not in out and "no-shadow" in out
    assert "shadow" not in out.replace("no-shadow", "")
    for word in ("usr-ro", "etc-ro", "tmp-ok", "workspace", "passwd"):
        assert word in out
    assert not Path("/usr/pwned").exists()


async def test_no_network_to_the_host(backend: GVisorBackend, workspace: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        result = await _run(
            backend,
            workspace,
            py(
                "import socket\n"
                "s = socket.socket(); s.settimeout(3)\n"
                "try:\n"
                f"    s.connect(('127.0.0.1', {port})); print('CONNECTED')\n"
                "except OSError as e:\n"
                "    print('blocked', e.errno)\n"
            ),
        )
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert b"blocked" in result.stdout and b"CONNECTED" not in result.stdout, result


async def test_new_namespaces_and_mount_are_refused(
    backend: GVisorBackend, workspace: Path
) -> None:
    result = await _run(
        backend,
        workspace,
        [
            "/bin/sh",
            "-c",
            "unshare -U true && echo USERNS; unshare -n true && echo NETNS; "
            "mount -t tmpfs none /tmp 2>/dev/null && echo MOUNTED; echo done",
        ],
    )
    assert result.stdout == b"done\n", result


async def test_memory_past_the_limit_is_stopped(backend: GVisorBackend, workspace: Path) -> None:
    result = await _run(
        backend,
        workspace,
        py("b = []\nfor i in range(64): b.append(bytearray(16 << 20))\nprint('all')"),
    )
    assert b"all" not in result.stdout
    assert result.exit_code != 0
    assert result.limit_hit == "memory", result


async def test_fork_bomb_is_stopped(backend: GVisorBackend, workspace: Path) -> None:
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 500:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('refused', e.errno)\n"
        "print('spawned', n)\n"
    )
    started = time.monotonic()
    result = await _run(backend, workspace, py(code))
    assert time.monotonic() - started < LIMITS.wall_seconds
    assert b"refused 11" in result.stdout, result
    assert int(result.stdout.split(b"spawned")[1]) < LIMITS.processes
    assert result.limit_hit == "processes"


async def test_cpu_time_limit(backend: GVisorBackend, workspace: Path) -> None:
    limits = dataclasses.replace(LIMITS, cpu_seconds=1, wall_seconds=10)
    result = await _run(backend, workspace, py("while True: pass"), limits=limits)
    assert result.limit_hit == "cpu_time", result
    assert result.exit_code is None


async def test_file_size_limit(backend: GVisorBackend, workspace: Path) -> None:
    result = await _run(
        backend, workspace, py("open('big', 'wb').write(b'x' * (8 << 20)); print('done')")
    )
    assert b"done" not in result.stdout
    assert result.limit_hit == "file_size", result
    assert (workspace / "big").stat().st_size <= LIMITS.file_size_mb << 20


async def test_wall_time_kills_the_sandbox_and_leaves_nothing(
    backend: GVisorBackend, workspace: Path
) -> None:
    limits = dataclasses.replace(LIMITS, wall_seconds=1.5)
    run_id = uuid.uuid4().hex
    started = time.monotonic()
    result = await _run(
        backend,
        workspace,
        ["/bin/sh", "-c", "echo start; sleep 30 & sleep 30; echo end"],
        limits=limits,
        run_id=run_id,
    )
    elapsed = time.monotonic() - started
    assert result.limit_hit == "wall_time"
    assert result.exit_code is None
    assert result.stdout == b"start\n"
    assert 1.4 <= elapsed < 3.5, elapsed
    assert _containers(backend) == "" or f"lunogen-{run_id}" not in _containers(backend)


async def test_cancelled_run_is_cleaned_up(backend: GVisorBackend, workspace: Path) -> None:
    run_id = uuid.uuid4().hex
    task = asyncio.ensure_future(
        backend.run(workspace, ["sleep", "30"], limits=LIMITS, run_id=run_id)
    )
    deadline = time.monotonic() + 20
    while not backend.state_files(f"lunogen-{run_id}"):  # until the container exists
        assert time.monotonic() < deadline, "the container never started"
        assert not task.done(), task
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _assert_cleaned(backend, run_id)


async def test_output_is_truncated(backend: GVisorBackend, workspace: Path) -> None:
    result = await _run(
        backend,
        workspace,
        py("import sys; sys.stdout.write('y' * 500_000); sys.stderr.write('e' * 100)"),
    )
    assert result.exit_code == 0
    assert result.truncated
    assert result.stdout == b"y" * LIMITS.output_bytes
    assert result.stderr == b"e" * 100
    assert result.limit_hit == "output"


async def test_five_runs_in_parallel(backend: GVisorBackend, tmp_path: Path) -> None:
    roots = []
    for i in range(5):
        root = tmp_path / f"par-{i}"
        root.mkdir()
        roots.append(root)

    async def one(root: Path) -> RunResult:
        return await _run(
            backend,
            root,
            ["/bin/sh", "-c", "echo $TOKEN > mine.txt; ls; cat mine.txt"],
            env={"TOKEN": root.name},
        )

    results = await asyncio.gather(*(one(root) for root in roots))
    for root, result in zip(roots, results, strict=True):
        assert result.stdout == f"mine.txt\n{root.name}\n".encode(), result
        assert (root / "mine.txt").read_text() == f"{root.name}\n"


def test_spec_drops_everything(backend: GVisorBackend, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    backend.write_bundle(
        bundle, tmp_path / "agent-x", ["true"], limits=LIMITS, env={"A": "1"}, fsize_bytes=7
    )
    spec = json.loads((bundle / "config.json").read_text())
    process = spec["process"]
    assert process["user"]["uid"] == backend.workspace_owner(tmp_path / "agent-x")[0]
    assert all(not caps for caps in process["capabilities"].values())
    assert process["noNewPrivileges"] is True
    rlimits = {r["type"]: r["hard"] for r in process["rlimits"]}
    assert rlimits["RLIMIT_NPROC"] == LIMITS.processes
    assert rlimits["RLIMIT_FSIZE"] == 7
    assert rlimits["RLIMIT_CORE"] == 0
    assert spec["root"]["readonly"] is True
    sources = {m["destination"]: m.get("source") for m in spec["mounts"]}
    assert sources["/workspace"] == str(tmp_path / "agent-x")
    assert "/etc/shadow" not in sources and sources["/etc"] == str(backend.etc)
    assert not (backend.etc / "shadow").exists()
    assert "A=1" in process["env"] and "HOME=/workspace" in process["env"]


def test_platform_choice(monkeypatch: pytest.MonkeyPatch, backend: GVisorBackend) -> None:
    from lunogen.sandbox.base import SandboxUnavailableError
    from lunogen.sandbox.gvisor import choose_platform

    monkeypatch.delenv("LUNOGEN_GVISOR_PLATFORM", raising=False)
    assert choose_platform(backend.binary) in {"ptrace", "systrap"}
    monkeypatch.setenv("LUNOGEN_GVISOR_PLATFORM", "ptrace")
    assert choose_platform(backend.binary) == "ptrace"
    monkeypatch.setenv("LUNOGEN_GVISOR_PLATFORM", "bogus")
    with pytest.raises(SandboxUnavailableError, match="bogus"):
        choose_platform(backend.binary)
