"""Platform-side file access to a workspace: confinement, links, quota, copy_in, listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lunogen.sandbox import (
    LunoEdge,
    WorkspaceError,
    WorkspaceNotFoundError,
    WorkspacePathError,
    WorkspaceQuotaError,
)
from lunogen.sandbox.process import ProcessBackend
from tests.sandbox.conftest import LIMITS

MIB = 1024 * 1024


@pytest.fixture
def edge(tmp_path: Path) -> LunoEdge:
    return LunoEdge(workspaces_dir=tmp_path / "workspaces", backend=ProcessBackend())


async def test_write_read_list_and_absolute_workspace_paths(edge: LunoEdge) -> None:
    await edge.write_file("a1", "dir/sub/hello.txt", b"hi", limits=LIMITS)
    assert await edge.read_file("a1", "dir/sub/hello.txt", max_bytes=100) == b"hi"
    assert await edge.read_file("a1", "/workspace/dir/sub/hello.txt", max_bytes=1) == b"h"
    assert await edge.read_file("a1", "dir/x/../sub/hello.txt", max_bytes=100) == b"hi"
    entries = await edge.list_files("a1", recursive=True)
    assert [(e.path, e.size, e.is_dir) for e in entries] == [
        ("dir", 0, True),
        ("dir/sub", 0, True),
        ("dir/sub/hello.txt", 2, False),
    ]
    assert [e.path for e in await edge.list_files("a1")] == ["dir"]
    assert len(await edge.list_files("a1", recursive=True, limit=2)) == 2
    assert edge.workspace_usage("a1") == 2


async def test_errors_are_workspace_errors_with_clear_messages(edge: LunoEdge) -> None:
    await edge.provision("a1", limits=LIMITS)
    with pytest.raises(WorkspacePathError, match=r"path escapes the workspace: \.\./x"):
        await edge.read_file("a1", "../x", max_bytes=10)
    with pytest.raises(WorkspaceNotFoundError, match="no such file"):
        await edge.read_file("a1", "missing.txt", max_bytes=10)
    await edge.write_file("a1", "d/f.txt", b"x", limits=LIMITS)
    with pytest.raises(WorkspacePathError, match="is a directory"):
        await edge.read_file("a1", "d", max_bytes=10)
    with pytest.raises(WorkspacePathError, match="not a directory"):
        await edge.write_file("a1", "d/f.txt/g", b"x", limits=LIMITS)
    with pytest.raises(WorkspacePathError, match="not a valid agent id"):
        await edge.read_file("../etc", "x", max_bytes=10)
    assert issubclass(WorkspaceError, ValueError)


@pytest.mark.parametrize("agent_id", ["..", ".", "a/b", "", "/abs", "a\x00b"])
async def test_agent_id_must_be_one_safe_component(edge: LunoEdge, agent_id: str) -> None:
    with pytest.raises(WorkspacePathError):
        await edge.provision(agent_id, limits=LIMITS)


async def test_links_inside_are_followed_links_outside_refused(
    edge: LunoEdge, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("host")
    await edge.write_file("a1", "real/f.txt", b"inside", limits=LIMITS)
    root = edge.workspaces_dir / "a1"
    os.symlink("real", root / "rel-link")
    os.symlink("/workspace/real/f.txt", root / "abs-link")
    os.symlink(str(outside), root / "out-link")
    os.symlink("../..", root / "up")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    assert await edge.read_file("a1", "rel-link/f.txt", max_bytes=10) == b"inside"
    assert await edge.read_file("a1", "abs-link", max_bytes=10) == b"inside"
    await edge.write_file("a1", "abs-link", b"changed", limits=LIMITS)
    assert (root / "real" / "f.txt").read_bytes() == b"changed"
    for path in ("out-link", "up/outside.txt", "loop1"):
        with pytest.raises(WorkspacePathError):
            await edge.read_file("a1", path, max_bytes=10)
        with pytest.raises(WorkspacePathError):
            await edge.write_file("a1", path, b"pwned", limits=LIMITS)
    assert outside.read_text() == "host"


async def test_fifo_and_devices_are_not_read(edge: LunoEdge) -> None:
    await edge.provision("a1", limits=LIMITS)
    os.mkfifo(edge.workspaces_dir / "a1" / "pipe")
    with pytest.raises(WorkspacePathError, match="not a regular file"):
        await edge.read_file("a1", "pipe", max_bytes=10)


async def test_quota_and_file_size(edge: LunoEdge) -> None:
    with pytest.raises(WorkspaceQuotaError, match="file too large"):
        await edge.write_file("a1", "big", b"x" * (LIMITS.file_size_mb * MIB + 1), limits=LIMITS)
    for i in range(LIMITS.workspace_mb // LIMITS.file_size_mb):
        await edge.write_file("a1", f"f{i}", b"x" * (LIMITS.file_size_mb * MIB), limits=LIMITS)
    with pytest.raises(WorkspaceQuotaError, match="quota exceeded"):
        await edge.write_file("a1", "one-more", b"x", limits=LIMITS)
    # Rewriting a file with the same size is not growth.
    await edge.write_file("a1", "f0", b"y" * (LIMITS.file_size_mb * MIB), limits=LIMITS)
    assert edge.workspace_usage("a1") == LIMITS.workspace_mb * MIB


async def test_copy_in_replaces_the_directory(edge: LunoEdge) -> None:
    await edge.copy_in(
        "a1", "skills/pdf", {"SKILL.md": b"# pdf", "scripts/run.py": b"print(1)"}, limits=LIMITS
    )
    await edge.copy_in("a1", "skills/pdf", {"SKILL.md": b"# v2"}, limits=LIMITS)
    listed = [e.path for e in await edge.list_files("a1", "skills", recursive=True)]
    assert listed == ["skills/pdf", "skills/pdf/SKILL.md"]
    assert await edge.read_file("a1", "skills/pdf/SKILL.md", max_bytes=10) == b"# v2"
    for bad in ("../evil", "/etc/x", "a/../../x"):
        with pytest.raises(WorkspacePathError):
            await edge.copy_in("a1", "skills/pdf", {bad: b"x"}, limits=LIMITS)
    with pytest.raises(WorkspacePathError):
        await edge.copy_in("a1", "../skills", {"a": b"x"}, limits=LIMITS)
    with pytest.raises(WorkspacePathError):
        await edge.copy_in("a1", ".", {"a": b"x"}, limits=LIMITS)
    # A refused copy leaves the previous version in place.
    assert await edge.read_file("a1", "skills/pdf/SKILL.md", max_bytes=10) == b"# v2"


async def test_provision_and_destroy_are_idempotent(edge: LunoEdge) -> None:
    await edge.provision("a1", limits=LIMITS)
    await edge.provision("a1", limits=LIMITS)
    await edge.write_file("a1", "x/y", b"1", limits=LIMITS)
    os.chmod(edge.workspaces_dir / "a1" / "x", 0)
    await edge.destroy("a1")
    await edge.destroy("a1")
    assert not (edge.workspaces_dir / "a1").exists()
    assert await edge.list_files("a1") == []


async def test_copy_in_then_copy_out_round_trips_a_directory(edge: LunoEdge) -> None:
    files = {"scripts/run.py": b"print(1)\n", "references/notes.md": b"# notes\n"}
    await edge.copy_in("a3", "skills/demo", files, limits=LIMITS)
    copied = await edge.copy_out("a3", "skills/demo", max_bytes=1000)
    assert copied == {f"skills/demo/{name}": data for name, data in files.items()}
    with pytest.raises(WorkspaceQuotaError):
        await edge.copy_out("a3", "skills/demo", max_bytes=10)
    with pytest.raises(WorkspaceQuotaError):
        await edge.copy_out("a3", "skills", max_bytes=1000, max_files=2)
    with pytest.raises(WorkspacePathError):
        await edge.copy_out("a3", "../a4", max_bytes=1000)
