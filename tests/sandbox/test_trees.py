"""Any tree sandboxed code can make is measured, listed and removed by the platform: a chain
deeper than Python's recursion limit, hundreds of thousands of files, link loops, FIFOs, modes
that lock the owner out. The walks hold a few descriptors whatever the depth, and a quota check
that fails stops the run instead of switching the quota off. Backend-independent: the trees are
made directly on the host; the two big ones on a private tmpfs when the tests run as root (ten
times faster to make than on a busy disk; the walks do not depend on the filesystem)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import stat
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lunogen.sandbox import LunoEdge, tree
from lunogen.sandbox.process import ProcessBackend
from lunogen.sandbox.workspace import Workspace
from tests.sandbox.conftest import LIMITS

DEPTH = 5000
FILES = 200_000
# Descriptors a walk may add to the process: a few, never one per level.
FD_ROOM = 8


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def few_fds_left() -> Iterator[None]:
    """Only FD_ROOM more descriptors may be opened meanwhile: a walk that keeps one per level
    fails with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1 + FD_ROOM, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def make_chain(top: Path, depth: int) -> None:
    fd = os.open(top, tree.DIR_FLAGS)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", tree.DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = child
    with open(os.open("leaf.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd), "wb") as leaf:
        leaf.write(b"bottom")
    os.close(fd)


def make_files(directory: Path, count: int) -> None:
    directory.mkdir()
    fd = os.open(directory, tree.DIR_FLAGS)
    try:
        for i in range(count):
            os.close(os.open(str(i), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    space = Workspace(tmp_path / "workspaces" / "agent-tree")
    space.ensure()
    return space  # removed after the test, whatever happened (conftest)


@pytest.fixture
def big_workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace for a tree of 200,000 entries: on a tmpfs of its own when we are root."""
    base = tmp_path / "fast"
    base.mkdir()
    mounted = False
    if os.geteuid() == 0:
        options = "size=256m,nr_inodes=400k,mode=0700"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(base)])
        mounted = done.returncode == 0
    space = Workspace(base / "workspaces" / "agent-big")
    space.ensure()
    try:
        yield space
    finally:
        space.destroy()
        if mounted:
            subprocess.run(["umount", str(base)], check=True)


def test_a_chain_5000_deep_is_measured_listed_and_removed_with_a_few_fds(
    big_workspace: Workspace,
) -> None:
    workspace = big_workspace
    make_chain(workspace.root, DEPTH)
    before = open_fds()
    with few_fds_left():
        check = workspace.check(LIMITS)
        fd = os.open(workspace.root, tree.DIR_FLAGS)
        try:
            whole = tree.measure(fd, max_entries=10 * DEPTH, max_depth=10 * DEPTH)
            listed = tree.list_entries(fd, [], recursive=True, limit=10 * DEPTH)
        finally:
            os.close(fd)
        workspace.destroy()
    # Past MAX_DEPTH the polling check gives up, and that counts as over quota.
    assert check.over and "levels" in check.detail, check
    assert whole == tree.TreeUsage(bytes=len(b"bottom"), entries=DEPTH + 1, complete=True)
    assert len(listed) == DEPTH + 1
    assert listed[-1].path == "/".join(["d"] * DEPTH + ["leaf.txt"])
    assert not workspace.root.exists()
    assert open_fds() == before


def test_200000_empty_files_count_against_the_file_cap_and_are_removed(
    big_workspace: Workspace,
) -> None:
    workspace = big_workspace
    make_files(workspace.root / "many", FILES)
    before = open_fds()
    with few_fds_left():
        check = workspace.check(LIMITS)
        workspace.destroy()
    assert check.over, check
    assert check.entries == LIMITS.max_files + 1  # the walk stopped just past the cap
    assert check.detail == "over the file cap"
    assert not workspace.root.exists()
    assert open_fds() == before


def test_links_loops_fifos_and_locked_modes_are_removed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("host file")
    space = Workspace(tmp_path / "workspaces" / "agent-odd")
    space.ensure()
    root = space.root
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    (root / "self").symlink_to(".")
    (root / "out").symlink_to(outside)
    os.mkfifo(root / "fifo")
    locked = root / "locked" / "inner"
    locked.mkdir(parents=True)
    (locked / "secret.bin").write_bytes(b"x" * 100)
    (locked / "secret.bin").chmod(0)
    (locked / "sub").mkdir()
    locked.chmod(0)
    (root / "locked").chmod(0o100)  # traversable, not readable nor writable
    (root / "nofile").write_text("y")
    (root / "nofile").chmod(0)
    (root / "locked-chain").mkdir()
    make_chain(root / "locked-chain", 50)
    (root / "locked-chain" / "d").chmod(0)

    if os.geteuid() == 0:
        # As the agent's uid, without root's override of modes: only the owner's rights.
        uid = 2_000_000_123
        for path in [root.parent, root, *root.rglob("*")]:
            os.chown(path, uid, uid, follow_symlinks=False)
        parent = os.open(root.parent, tree.DIR_FLAGS)  # the path above is root's alone
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            code = 1
            try:
                os.setgid(uid)
                os.setuid(uid)
                tree.remove(root.name, dir_fd=parent)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(parent)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    else:
        space.destroy()
    assert not os.path.lexists(root)
    assert (outside / "keep.txt").read_text() == "host file"


def test_listing_and_deleting_inside_follow_the_same_rules(workspace: Workspace) -> None:
    (workspace.root / "a").mkdir()
    make_chain(workspace.root / "a", 1200)
    entries = workspace.list_files("a", recursive=True, limit=2000)
    assert len(entries) == 1200 + 1  # 1200 "d", the leaf
    assert entries[-1].path == "/".join(["a", *["d"] * 1200, "leaf.txt"])
    workspace.delete("a")
    assert not (workspace.root / "a").exists()


async def test_a_quota_check_that_fails_stops_the_run_and_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = LunoEdge(workspaces_dir=tmp_path / "workspaces", backend=ProcessBackend())
    calls = 0
    real_check = Workspace.check

    def failing_after_start(self: Workspace, limits: object) -> object:
        nonlocal calls
        calls += 1
        if calls > 1:  # the check before the run works; the watcher's fail
            raise RecursionError("maximum recursion depth exceeded")
        return real_check(self, limits)  # type: ignore[arg-type]

    monkeypatch.setattr(Workspace, "check", failing_after_start)
    limits = dataclasses.replace(LIMITS, wall_seconds=10)
    with capture_logs() as logs:
        result = await edge.run("agent-w", ["sleep", "8"], limits=limits)
    assert result.limit_hit == "disk_quota", result  # the watcher's kill, not the wall time's
    failures = [e for e in logs if e["event"] == "sandbox.quota_check_failed"]
    assert failures and failures[0]["log_level"] == "error"
    assert "RecursionError" in failures[0]["error"]


def test_removal_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("host")
    space = Workspace(tmp_path / "workspaces" / "agent-link")
    space.ensure()
    (space.root / "dir").symlink_to(outside, target_is_directory=True)
    (space.root / "real").mkdir()
    (space.root / "real" / "up").symlink_to(outside, target_is_directory=True)
    fd = os.open(space.root, tree.DIR_FLAGS)
    try:
        tree.remove("dir", dir_fd=fd)
        tree.remove("real", dir_fd=fd)
    finally:
        os.close(fd)
    assert (outside / "keep.txt").read_text() == "host"
    assert not os.path.lexists(space.root / "dir")
    assert not os.path.lexists(space.root / "real")
    assert stat.S_ISDIR(os.lstat(outside).st_mode)
