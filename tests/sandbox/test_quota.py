"""Workspace quotas from inside the sandbox, on each backend, in each mode.

`kernel`: the workspace is a loop-mounted ext4 image of the quota's size and the file cap's
inodes, so the kernel refuses what does not fit, however many writers there are. `watcher`
(the fallback where the platform is not root or has no loop devices): size and file count are
polled during the run, and a tree too deep or too big to measure counts as over quota.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lunogen.sandbox import SandboxLimits, SandboxUnavailableError, WorkspaceQuotaError, diskimage
from lunogen.sandbox.bwrap import agent_uid
from lunogen.sandbox.edge import QuotaChoice, choose_quota_mode
from lunogen.sandbox.workspace import Workspace
from tests.sandbox.conftest import ISOLATING_BACKENDS, LIMITS, Sandbox, make_sandbox
from tests.sandbox.support import REQUIRE_ENV, mounts_under, unavailable

A = "agent-q"
MIB = 1024 * 1024
MODES: tuple[QuotaChoice, ...] = ("kernel", "watcher")
# Files as large as the whole quota: only the quota (not the file size limit) stops a writer.
WIDE = dataclasses.replace(LIMITS, file_size_mb=LIMITS.workspace_mb, processes=64)


@pytest.fixture(
    params=[(backend, mode) for backend in ISOLATING_BACKENDS for mode in MODES],
    ids=lambda param: "-".join(param),
)
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Sandbox:
    backend, mode = request.param
    sandbox = make_sandbox(backend, tmp_path, quota=mode)
    assert sandbox.edge.quota_mode == mode
    return sandbox


def py(code: str) -> list[str]:
    return ["python3", "-c", code]


def bytes_on_disk(root: Path) -> int:
    """What the workspace's files hold on disk (allocated blocks), walked from the host."""
    total = 0
    for directory, dirs, files in os.walk(root):
        for name in files + dirs:
            total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


PARALLEL_WRITERS = """
import os, sys
for i in range(24):
    if os.fork() == 0:
        code = 0
        try:
            with open(f'w{i}.bin', 'wb') as f:
                for _ in range(8):
                    f.write(b'x' * (1 << 20))
        except OSError as exc:
            print(exc, file=sys.stderr)
            code = 1
        os._exit(code)
failed = sum(os.waitstatus_to_exitcode(os.wait()[1]) != 0 for _ in range(24))
print('all writers done', failed, 'failed')
sys.exit(1 if failed else 0)
"""


async def test_parallel_writers_never_pass_the_quota(box: Sandbox) -> None:
    quota = WIDE.workspace_mb * MIB
    result = await box.edge.run(A, py(PARALLEL_WRITERS), limits=WIDE)
    assert result.limit_hit == "disk_quota", result
    root = box.edge.workspaces_dir / A
    if box.edge.quota_mode == "kernel":
        # 24 writers of 8 MB against 16 MB: the kernel held every one of them.
        assert bytes_on_disk(root) <= quota + MIB
        assert box.edge.workspace_usage(A) <= quota
        assert b"all writers done" in result.stdout  # refused, not killed
    # Either way the workspace is now at its quota: a write past it is refused.
    used = box.edge.workspace_usage(A)
    with pytest.raises(WorkspaceQuotaError):
        await box.edge.write_file(A, "more.bin", b"y" * (quota - used + 1), limits=WIDE)


CREATE_FILES = """
import os
os.mkdir('many')
made = 0
try:
    for i in range(3000):
        open(f'many/{i}', 'w').close()
        made += 1
except OSError as exc:
    print('refused after', made, exc.errno)
print('made', made)
"""


async def test_more_files_than_the_plan_allows_are_refused(box: Sandbox) -> None:
    result = await box.edge.run(A, py(CREATE_FILES), limits=LIMITS)
    assert result.limit_hit == "disk_quota", result
    held = Workspace(box.edge.workspaces_dir / A).check(LIMITS)
    if box.edge.quota_mode == "kernel":
        # The kernel ran out of inodes (mkfs rounds their number up to whole inode-table
        # blocks of 16); the watcher reports the exact cap.
        assert LIMITS.max_files < held.entries < LIMITS.max_files + 16, held
    # In the watcher mode a quick run may finish between two polls: the check after it still
    # reports the cap. Either way nothing more may be written.
    assert held.over and held.detail == "over the file cap", held
    with pytest.raises(WorkspaceQuotaError):
        await box.edge.write_file(A, "one-more.txt", b"z", limits=LIMITS)


DEEP_THEN_FILL = """
import os
for i in range({depth}):
    os.mkdir('d'); os.chdir('d')
os.chdir('/workspace')
print('deep', flush=True)
for i in range(48):
    with open(f'fill{{i}}.bin', 'wb') as f:
        f.write(b'x' * (1 << 20))
print('filled')
"""


async def test_a_5000_deep_tree_cannot_switch_the_quota_off(box: Sandbox) -> None:
    # A 5000-deep chain of directories takes ~20 MB of blocks in an image: give it room.
    limits = dataclasses.replace(WIDE, workspace_mb=32, wall_seconds=30, max_files=6000)
    fds = len(os.listdir("/proc/self/fd"))
    made = await box.edge.run(A, py(DEEP_THEN_FILL.format(depth=5000)), limits=limits)
    assert made.limit_hit == "disk_quota", made
    if box.edge.quota_mode == "kernel":
        assert b"deep" in made.stdout, made  # the chain was made; the files stopped at quota
        assert b"filled" not in made.stdout
        assert box.edge.workspace_usage(A) <= limits.workspace_mb * MIB
    # (The watcher may see a run this quick only after it: it still reports the quota.)
    # Later runs still meet the quota (the watcher counts an unmeasurable tree as over it).
    again = await box.edge.run(A, py(DEEP_THEN_FILL.format(depth=0)), limits=limits)
    assert again.limit_hit == "disk_quota", again
    assert b"filled" not in again.stdout
    await box.edge.destroy(A)
    assert not (box.edge.workspaces_dir / A).exists()
    assert mounts_under(box.edge.workspaces_dir) == []
    assert len(os.listdir("/proc/self/fd")) == fds


async def test_the_mode_is_logged_with_each_run(box: Sandbox) -> None:
    with capture_logs() as logs:
        result = await box.edge.run(A, ["true"], limits=LIMITS)
    assert result.exit_code == 0
    [run] = [e for e in logs if e["event"] == "sandbox.run"]
    assert run["quota"] == box.edge.quota_mode


# -- the kernel mode's life cycle (bwrap; the image is the backend's business only at mount) --


@pytest.fixture
def kernel_box(tmp_path: Path) -> Sandbox:
    return make_sandbox("bwrap", tmp_path, quota="kernel")


async def test_files_from_before_the_first_run_move_into_the_image(kernel_box: Sandbox) -> None:
    edge = kernel_box.edge
    await edge.provision(A, limits=LIMITS)
    await edge.copy_in(A, "skills/demo", {"SKILL.md": b"# demo"}, limits=LIMITS)
    workspace = Workspace(edge.workspaces_dir / A)
    assert workspace.quota_mode == "watcher"  # deploy makes no image: it stays cheap
    result = await edge.run(A, ["cat", "skills/demo/SKILL.md"], limits=LIMITS)
    assert result.stdout == b"# demo", result
    assert workspace.quota_mode == "kernel"
    # The mount's root belongs to the agent's host uid, like the directory it covers.
    root = os.stat(edge.workspaces_dir / A)
    assert (root.st_uid, root.st_gid) == (agent_uid(A), agent_uid(A))
    assert stat.S_IMODE(root.st_mode) == 0o700
    # Nothing stays hidden under the mount, and the sandbox sees only its files.
    listing = await edge.run(A, ["ls", "-A", "/workspace"], limits=LIMITS)
    assert listing.stdout == b"skills\n", listing


async def test_an_unmounted_image_is_mounted_again_before_use(kernel_box: Sandbox) -> None:
    edge = kernel_box.edge
    await edge.run(A, ["/bin/sh", "-c", "echo kept > notes.txt"], limits=LIMITS)
    workspace = Workspace(edge.workspaces_dir / A)
    workspace.image.unmount()  # as after a reboot
    assert workspace.quota_mode == "watcher"
    assert await edge.read_file(A, "notes.txt", max_bytes=100) == b"kept\n"
    assert workspace.quota_mode == "kernel"
    workspace.image.unmount()
    result = await edge.run(A, ["cat", "notes.txt"], limits=LIMITS)
    assert result.stdout == b"kept\n", result


async def test_a_plan_upgrade_grows_the_image(kernel_box: Sandbox) -> None:
    edge = kernel_box.edge
    small = dataclasses.replace(WIDE, workspace_mb=8)
    await edge.run(A, ["/bin/sh", "-c", "echo kept > notes.txt"], limits=small)
    workspace = Workspace(edge.workspaces_dir / A)
    assert workspace.image.usage().capacity == 8 * MIB
    big = dataclasses.replace(WIDE, workspace_mb=24, file_size_mb=24)
    fill = "head -c 20000000 /dev/zero > big.bin && cat notes.txt"
    result = await edge.run(A, ["/bin/sh", "-c", fill], limits=big)
    assert result.exit_code == 0 and result.stdout == b"kept\n", result
    assert workspace.image.usage().capacity == 24 * MIB


async def test_destroy_unmounts_and_deletes_the_image(kernel_box: Sandbox) -> None:
    edge = kernel_box.edge
    await edge.run(
        A, ["/bin/sh", "-c", "mkdir -p a/b && touch a/b/c && chmod 000 a"], limits=LIMITS
    )
    image = Workspace(edge.workspaces_dir / A).image
    assert image.exists() and image.mounted()
    await edge.destroy(A)
    assert not image.exists() and not image.mounted()
    assert not (edge.workspaces_dir / A).exists()
    assert list(image.dir.iterdir()) == []


# -- choosing the mode ---------------------------------------------------------------------------


def test_kernel_mode_refuses_to_start_where_it_cannot_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(diskimage, "unavailable_reason", lambda: "no loop devices")
    assert choose_quota_mode("auto", tmp_path) == "watcher"
    assert choose_quota_mode("watcher", tmp_path) == "watcher"
    with pytest.raises(SandboxUnavailableError, match="no loop devices"):
        choose_quota_mode("kernel", tmp_path)


def test_workspaces_on_a_shared_filesystem_get_no_images(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two machines mounting one image would corrupt it: a network filesystem means watcher."""
    monkeypatch.setattr(diskimage, "unavailable_reason", lambda: None)
    monkeypatch.setattr(diskimage, "filesystem_type", lambda path: "nfs4")
    assert choose_quota_mode("auto", tmp_path) == "watcher"
    with pytest.raises(SandboxUnavailableError, match="shared filesystem"):
        choose_quota_mode("kernel", tmp_path)
    monkeypatch.setattr(diskimage, "filesystem_type", lambda path: "ext4")
    assert choose_quota_mode("auto", tmp_path) == "kernel"


def test_the_filesystem_type_is_that_of_the_nearest_mount() -> None:
    assert diskimage.filesystem_type(Path("/proc/self")) == "proc"
    assert diskimage.filesystem_type(Path("/proc/no/such/path")) == "proc"


def test_required_sandboxes_fail_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "bwrap, kernel-quota")
    with pytest.raises(pytest.fail.Exception, match="kernel-quota is required here"):
        unavailable("kernel-quota", "no loop devices")
    with pytest.raises(pytest.skip.Exception, match="gvisor unavailable: runsc missing"):
        unavailable("gvisor", "runsc missing")
    monkeypatch.delenv(REQUIRE_ENV)
    with pytest.raises(pytest.skip.Exception):
        unavailable("bwrap", "not installed")


def test_plans_cap_files() -> None:
    from lunogen.account.plans import PLAN_LIMITS

    caps = {name: plan.sandbox.max_files for name, plan in PLAN_LIMITS.items()}
    assert caps == {"free": 10_000, "pro": 100_000}
    assert SandboxLimits.__dataclass_fields__["max_files"].default == 10_000
