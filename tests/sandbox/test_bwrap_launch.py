"""The bwrap launch chain (unshare, sh, prlimit, unshare --setuid, bwrap) leaves the command in
the state the Python preexec step used to: host uid, rlimits, cgroups, no capabilities,
no_new_privs, seccomp, no fd from the platform; and a failed setup step runs nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lunogen.sandbox import SandboxUnavailableError
from lunogen.sandbox.bwrap import BwrapBackend, agent_uid
from tests.sandbox.conftest import LIMITS, Sandbox, make_sandbox

A = "agent-launch"


@pytest.fixture
def bwrap_sandbox(tmp_path: Path) -> Sandbox:
    return make_sandbox("bwrap", tmp_path)


def _limits_of(text: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in text.splitlines()[1:]:
        name = line[:26].strip()
        soft, hard = line[26:].split()[:2]
        found[name] = (soft, hard)
    return found


async def test_command_state_after_the_launch_chain(bwrap_sandbox: Sandbox) -> None:
    result = await bwrap_sandbox.edge.run(
        A,
        [
            "/bin/sh",
            "-c",
            "grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status;"
            " echo FDS $(ls /proc/self/fd | tr '\\n' ' '); cat /proc/self/limits; touch made",
        ],
        limits=LIMITS,
    )
    assert result.exit_code == 0, result
    out = result.stdout.decode()
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert f"{cap}:\t0000000000000000" in out, out
    assert "NoNewPrivs:\t1" in out
    assert "Seccomp:\t2" in out
    # 0-2 and the fd of `ls` itself: no seccomp, cgroup or workspace fd leaked in.
    assert len(out.split("FDS ")[1].split("\n")[0].split()) <= 4, out
    limits = _limits_of(out[out.index("Limit ") :])
    assert limits["Max cpu time"] == (str(LIMITS.cpu_seconds), str(LIMITS.cpu_seconds + 1))
    assert limits["Max open files"] == (str(LIMITS.open_files), str(LIMITS.open_files))
    assert limits["Max data size"][0] == str(LIMITS.memory_mb << 20)
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


async def test_failed_setup_step_runs_nothing(
    bwrap_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = bwrap_sandbox.edge.backend
    assert isinstance(backend, BwrapBackend)
    if backend._mount_point is None:
        pytest.skip("the workspace bind step only exists when the platform runs as root")
    monkeypatch.setitem(backend.tools, "mount", "/bin/false")
    marker = bwrap_sandbox.edge.workspaces_dir / A / "ran"
    with pytest.raises(SandboxUnavailableError, match="could not bind"):
        await bwrap_sandbox.edge.run(A, ["touch", "ran"], limits=LIMITS)
    assert not marker.exists()
