"""The host-side setup of a bwrap run, by the one-exec helper (`sandbox.launcher`) or, where it
cannot be built, by the exec chain (unshare, sh, prlimit, unshare --setuid): either leaves the
command with the agent's host uid, its rlimits and cgroups, no capabilities, no_new_privs,
seccomp and no fd from the platform; and a failed setup step runs nothing."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from lunogen.sandbox import SandboxUnavailableError, launcher
from lunogen.sandbox.bwrap import BwrapBackend, agent_uid
from lunogen.sandbox.limits import RunCgroup
from tests.sandbox.conftest import LIMITS, Sandbox, make_sandbox, running_with_marker

A = "agent-launch"
LAUNCHES = ("helper", "chain")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes uid and mounts: root only")


@pytest.fixture(params=LAUNCHES)
def bwrap_sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Sandbox:
    """A bwrap sandbox launched by the helper, or by the exec chain (a machine without cc)."""
    box = make_sandbox("bwrap", tmp_path)
    backend = box.edge.backend
    assert isinstance(backend, BwrapBackend)
    if request.param == "helper":
        # This machine can build it (bwrap runs here, and cc is how CI gets the fast path).
        assert backend.launcher is not None, "the launcher helper could not be built here"
    else:
        backend.launcher = None
    return box


def _limits_of(text: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in text.splitlines()[1:]:
        name = line[:26].strip()
        soft, hard = line[26:].split()[:2]
        found[name] = (soft, hard)
    return found


async def test_command_state_after_the_launch(bwrap_sandbox: Sandbox) -> None:
    result = await bwrap_sandbox.edge.run(
        A,
        [
            "/bin/sh",
            "-c",
            "grep -E '^(CapInh|CapPrm|CapEff|CapAmb|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status;"
            " echo FDS $(ls /proc/self/fd | tr '\\n' ' '); cat /proc/self/limits; touch made",
        ],
        limits=LIMITS,
    )
    assert result.exit_code == 0, result
    out = result.stdout.decode()
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"):
        assert f"{cap}:\t0000000000000000" in out, out
    assert "NoNewPrivs:\t1" in out
    assert "Seccomp:\t2" in out
    # 0-2 and the fd of `ls` itself: no seccomp, cgroup or workspace fd leaked in.
    assert len(out.split("FDS ")[1].split("\n")[0].split()) <= 4, out
    limits = _limits_of(out[out.index("Limit ") :])
    assert limits["Max cpu time"] == (str(LIMITS.cpu_seconds), str(LIMITS.cpu_seconds + 1))
    assert limits["Max open files"] == (str(LIMITS.open_files), str(LIMITS.open_files))
    assert limits["Max data size"] == (str(LIMITS.memory_mb << 20),) * 2
    assert limits["Max core file size"] == ("0", "0")
    assert int(limits["Max file size"][0]) <= LIMITS.file_size_mb << 20
    made = bwrap_sandbox.edge.workspaces_dir / A / "made"
    if os.geteuid() == 0:
        assert int(limits["Max processes"][0]) > 0
        assert made.stat().st_uid == agent_uid(A)
        assert made.stat().st_gid == agent_uid(A)
    else:
        assert made.stat().st_uid == os.geteuid()


async def test_platform_keeps_its_mount_namespace(bwrap_sandbox: Sandbox) -> None:
    before = os.readlink("/proc/self/ns/mnt")
    result = await bwrap_sandbox.edge.run(A, ["true"], limits=LIMITS)
    assert result.exit_code == 0, result
    assert os.readlink("/proc/self/ns/mnt") == before
    backend = bwrap_sandbox.edge.backend
    assert isinstance(backend, BwrapBackend)
    if backend._mount_point is not None:
        # The workspace was bound in the run's own namespace only.
        assert not any(backend._mount_point.iterdir())


async def test_failed_setup_step_runs_nothing(bwrap_sandbox: Sandbox, tmp_path: Path) -> None:
    backend = bwrap_sandbox.edge.backend
    assert isinstance(backend, BwrapBackend)
    if backend._mount_point is None:
        pytest.skip("the workspace bind step only exists when the platform runs as root")
    backend._mount_point = tmp_path / "no-such-mount-point"
    marker = bwrap_sandbox.edge.workspaces_dir / A / "ran"
    with pytest.raises(SandboxUnavailableError, match="could not bind"):
        await bwrap_sandbox.edge.run(A, ["touch", "ran"], limits=LIMITS)
    assert not marker.exists()


async def test_the_helper_is_the_only_setup_program(tmp_path: Path) -> None:
    box = make_sandbox("bwrap", tmp_path)
    backend = box.edge.backend
    assert isinstance(backend, BwrapBackend)
    assert backend.launcher is not None
    owner = (agent_uid(A), agent_uid(A)) if os.geteuid() == 0 else None
    argv = backend._launcher(
        workspace=str(tmp_path),
        cgroup=None,
        limits=[(resource.RLIMIT_CORE, (0, 0))],
        owner=owner,
        command=[backend.binary, "--", "true"],
    )
    assert argv[0] == backend.launcher
    assert argv[argv.index("--") + 1] == backend.binary  # the helper execs bwrap itself
    assert not set(backend.tools.values()) & set(argv)  # no unshare, sh, mount or prlimit


async def test_runs_leave_no_fd_or_thread_behind(bwrap_sandbox: Sandbox) -> None:
    """The run is watched on the event loop (a pidfd and pipe transports): no child-watcher
    thread per run, and every pipe closed afterwards, even one whose input was never read."""
    await bwrap_sandbox.edge.run(A, ["true"], limits=LIMITS)  # the workspace image is made
    fds_before = sorted(os.listdir("/proc/self/fd"))
    threads: list[str] = []

    async def sample_threads() -> None:
        while True:
            threads.extend(thread.name for thread in threading.enumerate())
            await asyncio.sleep(0)

    sampler = asyncio.ensure_future(sample_threads())
    try:
        unread = await bwrap_sandbox.edge.run(
            A, ["sleep", "0.2"], limits=LIMITS, stdin=b"x" * (4 << 20)
        )
        echoed = await bwrap_sandbox.edge.run(A, ["cat"], limits=LIMITS, stdin=b"to and fro")
    finally:
        sampler.cancel()
    assert unread.exit_code == 0, unread
    assert echoed.stdout == b"to and fro", echoed
    assert not [name for name in threads if "waitpid" in name], set(threads)
    await asyncio.sleep(0)  # transports close their pipes on the next loop turn
    assert sorted(os.listdir("/proc/self/fd")) == fds_before


def _record_cgroups(
    backend: BwrapBackend, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Path]]:
    """The cgroups each run of `backend` makes from now on (other test processes may be
    running sandboxes under the same parent at the same time: only these are checked)."""
    made: list[dict[str, Path]] = []
    create = backend.cgroups.create

    def recording(*args: Any, **kwargs: Any) -> RunCgroup:
        run = create(*args, **kwargs)
        made.append(dict(run.paths))
        return run

    monkeypatch.setattr(backend.cgroups, "create", recording)
    return made


async def test_a_run_waits_for_its_leftovers_then_removes_its_cgroups_at_once(
    bwrap_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bwrap's pid 1 is usually still exiting when the command's exit is seen: the run waits
    for it on the loop (pidfds), so the cgroups are empty when removed, never retried."""
    backend = bwrap_sandbox.edge.backend
    assert isinstance(backend, BwrapBackend)
    if not backend.cgroups.available:
        pytest.skip("no writable cgroup tree here")
    retried: list[RunCgroup] = []
    monkeypatch.setattr(RunCgroup, "remove", lambda self: retried.append(self))
    made = _record_cgroups(backend, monkeypatch)
    for _ in range(10):
        result = await bwrap_sandbox.edge.run(A, ["true"], limits=LIMITS)
        assert result.exit_code == 0, result
    assert retried == []
    assert len(made) == 10 and all(made)
    assert [path for run in made for path in run.values() if path.exists()] == []


async def test_a_cancelled_run_leaves_nothing_behind(
    bwrap_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bwrap_sandbox.edge.run(A, ["true"], limits=LIMITS)  # the workspace image is made
    backend = bwrap_sandbox.edge.backend
    assert isinstance(backend, BwrapBackend)
    made = _record_cgroups(backend, monkeypatch)
    fds_before = sorted(os.listdir("/proc/self/fd"))
    marker = f"cancelled-{uuid.uuid4().hex}"
    run = asyncio.ensure_future(
        bwrap_sandbox.edge.run(
            A, ["/bin/sh", "-c", f"sleep 30 & sleep 30; echo {marker}"], limits=LIMITS
        )
    )
    await asyncio.sleep(0.5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.sleep(0.2)
    assert running_with_marker(marker) == []
    assert [path for run in made for path in run.values() if path.exists()] == []
    assert sorted(os.listdir("/proc/self/fd")) == fds_before


# -- the helper on its own -----------------------------------------------------------------------


def _helper() -> str:
    binary = launcher.find_launcher()
    if binary is None:
        pytest.skip("the launcher helper cannot be built here (no cc)")
    return binary


def _run_helper(
    tmp_path: Path,
    *,
    mount_point: str | None = None,
    owner: tuple[int, int] | None = None,
    join_files: list[str] | None = None,
    limits: list[tuple[int, tuple[int, int]]] | None = None,
    script: str = "touch ran",
) -> subprocess.CompletedProcess[bytes]:
    argv = launcher.launcher_argv(
        _helper(),
        workspace=str(tmp_path / "ws"),
        mount_point=mount_point,
        owner=owner,
        join_files=join_files or [],
        limits=limits or [],
        command=["/bin/sh", "-c", script],
    )
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=30, check=False)


@pytest.mark.parametrize("step", ["bind", "cgroup", "rlimit"])
def test_the_helper_fails_closed(tmp_path: Path, step: str) -> None:
    (tmp_path / "ws").mkdir()
    if step == "bind" and os.geteuid() != 0:
        pytest.skip("binding needs root")
    done = _run_helper(
        tmp_path,
        mount_point=str(tmp_path / "missing") if step == "bind" else None,
        join_files=[str(tmp_path / "no-cgroup" / "tasks")] if step == "cgroup" else None,
        # soft above hard: setrlimit refuses it
        limits=[(resource.RLIMIT_NOFILE, (64, 32))] if step == "rlimit" else None,
    )
    assert done.returncode == 1, done
    assert done.stderr.startswith(b"lunogen-sandbox: "), done
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["ws", "", "-1", "-1", "0", "0", "/bin/true", "x"],  # no "--"
        ["ws", "", "-1", "-1", "2", "x", "0", "--", "/bin/true"],  # 2 join files, 1 given
        ["ws", "", "-2", "-1", "0", "0", "--", "/bin/true"],  # not an id
        ["ws", "", "-1", "-1", "0", "1", "7", "1", "--", "/bin/true"],  # a limit cut short
        ["ws", "", "-1", "-1", "0", "0", "--"],  # no command
    ],
)
def test_the_helper_refuses_bad_arguments(args: list[str]) -> None:
    done = subprocess.run([_helper(), *args], capture_output=True, timeout=30, check=False)
    assert done.returncode == 1, done
    assert done.stderr.startswith(b"lunogen-sandbox: "), done


@needs_root
def test_the_helper_sets_limits_and_drops_to_the_agent(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    uid = agent_uid(A)
    done = _run_helper(
        tmp_path,
        owner=(uid, uid + 1),
        limits=[(resource.RLIMIT_NOFILE, (40, 41)), (resource.RLIMIT_CORE, (0, 0))],
        script="id -u; id -g; id -G; grep -E '^Cap(Prm|Eff|Amb):' /proc/self/status; ulimit -n",
    )
    assert done.returncode == 0, done
    lines = done.stdout.decode().split("\n")
    assert lines[:3] == [str(uid), str(uid + 1), str(uid + 1)]  # no supplementary groups
    assert all(line.endswith("0000000000000000") for line in lines[3:6]), lines
    assert lines[6] == "40"


@needs_root
def test_the_helper_binds_in_a_namespace_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "inside.txt").write_text("ws")
    point = tmp_path / "point"
    point.mkdir()
    done = _run_helper(tmp_path, mount_point=str(point), script=f"cat {point}/inside.txt")
    assert done.returncode == 0, done
    assert done.stdout == b"ws"
    assert not any(point.iterdir())  # the host never saw the bind


# -- building and trusting it --------------------------------------------------------------------


def test_without_a_compiler_the_backend_uses_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    place = tmp_path / "helper"
    with capture_logs() as logs:
        assert launcher.find_launcher(place) is None
    assert [e["event"] for e in logs] == ["sandbox.launcher_unavailable"]
    assert "compiler" in logs[0]["reason"]


def test_a_helper_others_can_write_is_never_used(tmp_path: Path) -> None:
    place = tmp_path / "shared"
    place.mkdir()
    place.chmod(0o777)
    with capture_logs() as logs:
        assert launcher.find_launcher(place) is None
    assert "writable by others" in logs[0]["reason"]
    _helper()  # a trusted place builds it
    target = place / f"{launcher.NAME_PREFIX}{launcher.fingerprint()}"
    place.chmod(0o755)
    shutil.copy(_helper(), target)
    target.chmod(0o777)
    with capture_logs() as logs:
        assert launcher.find_launcher(place) is None
    assert "writable by others" in logs[0]["reason"]
