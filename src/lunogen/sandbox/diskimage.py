"""The kernel-enforced workspace quota: one ext4 image per workspace, loop-mounted on it.

When the platform runs as root and loop devices work, each workspace gets a sparse ext4 image
(`<workspaces_dir>/.images/<agent_id>.ext4`, beside the workspaces and out of every sandbox's
sight) sized so that its usable space is exactly the plan's workspace quota, with the plan's
file count in inodes. It is mounted `nosuid,nodev` on the workspace directory (not `noexec`:
scripts and programs the agent builds run from there), so the kernel refuses writes past the
quota (ENOSPC), whatever the number of writers, and both backends bind the mounted directory.

The image is made at the agent's first sandbox run, not at deploy (mkfs and mount take 7-13 ms;
the first image of a plan in a process 25-35 ms), from whatever the workspace already holds
(skill files copied at deploy, files the tools wrote). It is mounted again before any run or
file operation when it is not (after a reboot), grown offline after a plan upgrade when no run
holds it, and unmounted and deleted with the workspace.

Who may change what: runs and file operations hold the workspace's lock file shared; creating,
mounting, growing and destroying hold it exclusively (`flock`, so several server processes on one
machine agree).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lunogen.sandbox.base import SandboxLimits
from lunogen.sandbox.tree import DIR_FLAGS, remove

IMAGES_DIR = ".images"  # never an agent id: those start with a letter or digit
BLOCK = 4096
MIB = 1024 * 1024
JOURNAL_MB = 4  # the smallest ext4 journal with 4 KiB blocks
# Inodes 1-10 belong to the filesystem itself (the root directory is inode 2).
RESERVED_INODES = 10
MOUNT_OPTIONS = "loop,nosuid,nodev,noatime,noinit_itable,discard"
TOOLS = ("mkfs.ext4", "dumpe2fs", "e2fsck", "resize2fs", "mount", "umount")
TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
LOCK_TIMEOUT = 10.0  # seconds to wait for the exclusive lock of a workspace
DETACH_WAIT = 2.0  # seconds for a loop device to let go of its image after umount
_CALIBRATION_ROUNDS = 6


class ImageError(OSError):
    """An image could not be made, mounted, grown or removed. The message says why."""


@dataclass(frozen=True)
class ImageUsage:
    bytes: int  # allocated in the filesystem (files, directories, links)
    entries: int  # inodes in use, the filesystem's own excluded
    free_bytes: int  # what a write may still take
    free_entries: int
    capacity: int  # bytes usable in all


def tool(name: str) -> str:
    path = shutil.which(name, path=TOOL_PATH)
    if path is None:
        raise ImageError(errno.ENOENT, f"{name} is not installed (apt-get install e2fsprogs)")
    return path


def _run(argv: list[str], *, ok: tuple[int, ...] = (0,), timeout: float = 120) -> str:
    """Run one of TOOLS; its stdout. ImageError (with the tool's own words) on another exit."""
    try:
        done = subprocess.run(  # noqa: S603
            [tool(argv[0]), *argv[1:]], capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(errno.EIO, f"{argv[0]} failed: {exc}") from exc
    if done.returncode not in ok:
        message = (done.stderr or done.stdout).decode(errors="replace").strip()
        raise ImageError(errno.EIO, f"{argv[0]} failed (exit {done.returncode}): {message}")
    return done.stdout.decode(errors="replace")


# -- sizes ---------------------------------------------------------------------------------------


def inodes_for(limits: SandboxLimits) -> int:
    # +1 for lost+found, which e2fsck makes again when it repairs an image.
    return limits.max_files + RESERVED_INODES + 1


def _reserved_blocks(blocks: int) -> int:
    """ext4 keeps 2% of the blocks, at most 4096, out of everyone's reach (ext4_calculate_resv)."""
    return min(blocks // 50, 4096)


def _usable_blocks(image: Path) -> int:
    """Blocks a full filesystem on `image` holds: statfs' f_blocks less the reserve."""
    fields: dict[str, int] = {}
    for line in _run(["dumpe2fs", "-h", str(image)]).splitlines():
        key, _, value = line.partition(":")
        if key in ("Block count", "Overhead clusters"):
            fields[key] = int(value.strip())
    count = fields.get("Block count")
    if count is None:
        raise ImageError(errno.EIO, f"dumpe2fs does not report the size of {image}")
    if "Overhead clusters" in fields:
        return count - fields["Overhead clusters"] - _reserved_blocks(count)
    # Older e2fsprogs do not record the overhead: ask the kernel.
    with tempfile.TemporaryDirectory(prefix="lunogen-quota-") as tmp:
        _run(["mount", "-t", "ext4", "-o", "loop,ro,noload", str(image), tmp])
        try:
            st = os.statvfs(tmp)
        finally:
            _run(["umount", tmp])
    return st.f_blocks - _reserved_blocks(count)


def _mkfs(
    image: Path,
    blocks: int,
    inodes: int,
    *,
    owner: tuple[int, int] | None = None,
    source: Path | None = None,
) -> None:
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:  # sparse: the host disk holds only what is written
        os.ftruncate(fd, blocks * BLOCK)
    finally:
        os.close(fd)
    extended = "lazy_itable_init=1,lazy_journal_init=1,nodiscard"  # a new sparse file reads 0
    if owner is not None:
        extended += f",root_owner={owner[0]}:{owner[1]}"
    argv = ["mkfs.ext4", "-q", "-F", "-b", str(BLOCK), "-m", "0", "-N", str(inodes)]
    if blocks >= 4 * JOURNAL_MB * MIB // BLOCK:
        argv += ["-J", f"size={JOURNAL_MB}"]
    else:  # too small for the smallest journal; e2fsck repairs it after a crash instead
        argv += ["-O", "^has_journal"]
    argv += ["-E", extended, "-L", "lunogen-ws"]
    if source is not None:
        argv += ["-d", str(source)]
    _run([*argv, str(image)])


@functools.lru_cache(maxsize=32)
def _blocks_for(quota_bytes: int, inodes: int) -> int:
    """Image size (in blocks) whose usable space is `quota_bytes`, found by making empty
    images: the filesystem's own share (inode tables, journal, reserve) depends on the size."""
    target = -(-quota_bytes // BLOCK)
    blocks = target + -(-inodes * 256 // BLOCK) + JOURNAL_MB * MIB // BLOCK + 64
    blocks += _reserved_blocks(blocks)
    with tempfile.TemporaryDirectory(prefix="lunogen-quota-") as tmp:
        scratch = Path(tmp) / "calibrate.ext4"
        for _ in range(_CALIBRATION_ROUNDS):
            _mkfs(scratch, blocks, inodes)
            short = target - _usable_blocks(scratch)
            if short == 0:
                break
            blocks += short
    return blocks  # at worst a few blocks off: the quota check covers the difference


# -- availability --------------------------------------------------------------------------------


@functools.cache
def unavailable_reason() -> str | None:
    """Why workspaces cannot get kernel-enforced quotas here (None when they can), proven by
    making, mounting, filling and removing a small image."""
    if os.geteuid() != 0:
        return "the server does not run as root (mounting a workspace image needs root)"
    try:
        for name in TOOLS:
            tool(name)
    except ImageError as exc:
        return str(exc)
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control is missing)"
    limits = SandboxLimits(
        cpu_seconds=1,
        memory_mb=16,
        processes=1,
        open_files=16,
        file_size_mb=1,
        workspace_mb=1,
        wall_seconds=1,
        max_files=8,
    )
    with tempfile.TemporaryDirectory(prefix="lunogen-quota-probe-") as tmp:
        root = Path(tmp) / "probe"
        root.mkdir()
        image = WorkspaceImage(root)
        try:
            image.create(limits, owner=None)
            try:
                return _probe_full(root)
            finally:
                image.delete()
        except (ImageError, OSError) as exc:
            return f"a loop-mounted ext4 image does not work here: {exc}"


# Filesystems other machines may share: two hosts mounting one image would corrupt it, and a
# host without the mount would write beneath it.
SHARED_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "9p", "afs"}
)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (its nearest existing ancestor)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    target = os.path.realpath(path)
    best, kind = "", ""
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            fs_type = fields[fields.index("-") + 1]
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fs_type
    return kind


def unavailable_reason_for(workspaces_dir: Path) -> str | None:
    """unavailable_reason(), and whether the workspaces live on a filesystem of this machine."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    kind = filesystem_type(workspaces_dir)
    if kind in SHARED_FILESYSTEMS or kind.startswith("fuse"):
        return f"the workspaces are on a shared filesystem ({kind}): images need a local one"
    return None


def _probe_full(root: Path) -> str | None:
    try:
        with open(root / "fill", "wb") as handle:
            handle.write(b"x" * (2 * MIB))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return None
        raise
    return "the image did not refuse a write past its size"


# -- one workspace's image -----------------------------------------------------------------------


class WorkspaceImage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root.parent / IMAGES_DIR
        self.path = self.dir / f"{root.name}.ext4"
        self.lock_path = self.dir / f"{root.name}.lock"

    def exists(self) -> bool:
        return self.path.is_file()

    def mounted(self) -> bool:
        try:
            return os.lstat(self.root).st_dev != os.lstat(self.root.parent).st_dev
        except FileNotFoundError:
            return False

    def usage(self) -> ImageUsage:
        st = os.statvfs(self.root)
        used_inodes = st.f_files - st.f_ffree
        return ImageUsage(
            bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
            entries=max(0, used_inodes - RESERVED_INODES),
            free_bytes=st.f_bavail * st.f_frsize,
            free_entries=st.f_favail,
            capacity=(st.f_blocks - st.f_bfree + st.f_bavail) * st.f_frsize,
        )

    # -- locking -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(
        self, *, exclusive: bool, timeout: float | None = LOCK_TIMEOUT, make_dir: bool = False
    ) -> Iterator[bool]:
        """Holds the workspace's lock; yields False (and holds nothing) when `timeout` passed
        first. Without the images directory (no image was ever made beside this workspace, and
        `make_dir` is False) there is nothing to lock."""
        if make_dir:
            self.dir.mkdir(mode=0o700, exist_ok=True)
        fd: int | None = None
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if fd is None:
            yield True
            return
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.01)
            yield True
        finally:
            os.close(fd)

    # -- making and mounting -----------------------------------------------------------------

    def create(self, limits: SandboxLimits, *, owner: tuple[int, int] | None) -> None:
        """Make the image from what the workspace holds now, then mount it. The caller holds
        the exclusive lock. Raises ImageError; the workspace is then as it was, unless the image
        was made and only the mount failed (`exists()` tells)."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        inodes = inodes_for(limits)
        blocks = _blocks_for(limits.workspace_mb * MIB, inodes)
        staging = self.path.with_name(self.path.name + ".new")
        try:
            _mkfs(staging, blocks, inodes, owner=owner, source=self._source())
            os.replace(staging, self.path)  # from here on, the image holds the workspace
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        self.mount(owner=owner)

    def _source(self) -> Path | None:
        """The workspace directory, when it holds anything to copy into a new image."""
        try:
            with os.scandir(self.root) as it:
                return self.root if any(True for _ in it) else None
        except FileNotFoundError:
            return None

    def mount(self, *, owner: tuple[int, int] | None) -> None:
        """Mount the image on the workspace directory (caller holds the exclusive lock).

        Whatever lies in the directory under the mount is stale (the image is the workspace),
        and is removed first so it cannot hide there."""
        if self.mounted():
            return
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._clear_underneath()
        argv = ["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(self.path), str(self.root)]
        try:
            _run(argv)
        except ImageError:
            # An unclean shutdown without a usable journal: repair, then try once more.
            self._fsck()
            _run(argv)
        if not self.mounted():
            raise ImageError(errno.EIO, f"mount reported success but {self.root} is not mounted")
        self._settle_root(owner)

    def _clear_underneath(self) -> None:
        fd = os.open(self.root, DIR_FLAGS)
        try:
            with os.scandir(fd) as it:
                names = [entry.name for entry in it]
            for name in names:
                remove(name, dir_fd=fd)
        finally:
            os.close(fd)

    def _settle_root(self, owner: tuple[int, int] | None) -> None:
        fd = os.open(self.root, DIR_FLAGS)
        try:
            with contextlib.suppress(OSError):  # only mkfs' or e2fsck's own, and only if empty
                if os.stat("lost+found", dir_fd=fd, follow_symlinks=False).st_uid == 0:
                    os.rmdir("lost+found", dir_fd=fd)
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)

    def _fsck(self) -> None:
        # Exit 1: errors were fixed. Anything above is a filesystem e2fsck could not repair.
        _run(["e2fsck", "-f", "-p", str(self.path)], ok=(0, 1))

    # -- changing size -----------------------------------------------------------------------

    def needs_growing(self, limits: SandboxLimits) -> bool:
        return self.usage().capacity < limits.workspace_mb * MIB

    def grow(self, limits: SandboxLimits, *, owner: tuple[int, int] | None) -> bool:
        """Grow the image to the plan's quota (after an upgrade). Needs the exclusive lock and
        no run holding the filesystem; False (the image unchanged and mounted) otherwise.

        Online resizing needs CAP_SYS_RESOURCE, which containers often lack, so the image is
        unmounted, checked and resized offline."""
        if not self._unmount_now():
            return False
        try:
            if not self._wait_detached():
                return False
            self._fsck()
            target = -(-limits.workspace_mb * MIB // BLOCK)
            for _ in range(_CALIBRATION_ROUNDS):
                short = target - _usable_blocks(self.path)
                if short <= 0:
                    break
                blocks = os.stat(self.path).st_size // BLOCK + short
                with open(self.path, "r+b") as handle:
                    handle.truncate(blocks * BLOCK)
                _run(["resize2fs", str(self.path), str(blocks)])
            return True
        finally:
            self.mount(owner=owner)

    # -- removing ----------------------------------------------------------------------------

    def _unmount_now(self) -> bool:
        if not self.mounted():
            return True
        try:
            _run(["umount", str(self.root)])
        except ImageError:
            return not self.mounted()
        return True

    def unmount(self) -> None:
        """Unmount, lazily when something still uses it (a run in progress keeps its own view
        until it ends; the loop device lets go of the image then)."""
        if self._unmount_now():
            return
        _run(["umount", "-l", str(self.root)])
        if self.mounted():
            raise ImageError(errno.EBUSY, f"{self.root} is still mounted")

    def _attached(self) -> bool:
        """Whether a loop device still serves the image (its filesystem is alive somewhere)."""
        wanted = str(self.path)
        for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
            with contextlib.suppress(OSError):
                if backing.read_text().strip().removesuffix(" (deleted)") == wanted:
                    return True
        return False

    def _wait_detached(self) -> bool:
        deadline = time.monotonic() + DETACH_WAIT
        while self._attached():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def delete(self) -> None:
        """Unmount and delete the image (the workspace directory stays, empty, for the caller)."""
        self.unmount()
        for path in (self.path, self.path.with_name(self.path.name + ".new"), self.lock_path):
            path.unlink(missing_ok=True)
