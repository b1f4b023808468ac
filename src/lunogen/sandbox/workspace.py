"""Agent workspaces on the host, and the platform's file access to them.

A workspace is `<workspaces_dir>/<agent_id>`. Sandboxed code owns its contents, so the
platform treats every name in it as hostile: paths are resolved one component at a time with
`openat(O_NOFOLLOW)` from a directory fd of the workspace root, `..` is resolved lexically and may
never leave the root, and a symbolic link is followed only when its target (read, not trusted)
stays inside the workspace. A swap of a checked directory for a link between two calls cannot
redirect us: every step opens relative to the fd of the previous one.

The quota (bytes and entries, from the plan) holds in one of two ways: the kernel's, when the
workspace has its own loop-mounted ext4 image (`diskimage`), or the watcher's, polling a walk of
the tree during runs (`tree`, which survives any tree). `check()` says where a workspace stands.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from lunogen.errors import LunogenError
from lunogen.sandbox import tree
from lunogen.sandbox.base import WORKSPACE_MOUNT, SandboxLimits
from lunogen.sandbox.diskimage import ImageError, WorkspaceImage
from lunogen.sandbox.tree import FileEntry

log = structlog.get_logger(__name__)

MIB = 1024 * 1024
# Agent ids are uuids today; any single, plain path component is accepted.
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup
_MAX_PATH_PARTS = tree.MAX_DEPTH  # components a file operation's path may have
_DIR_FLAGS = tree.DIR_FLAGS
# How the quota of a workspace is enforced: by the kernel (its own loop-mounted ext4 image), or
# by polling its size and entry count while code runs.
QuotaMode = Literal["kernel", "watcher"]
# A kernel-enforced workspace with less than this free counts as full: a run that then failed
# with ENOSPC hit the quota. Not 0, because a large write is refused whole when its page-cache
# folio (up to 2 MiB) cannot be reserved, even with a little space left for small ones.
_FULL_MARGIN = 2 * MIB


class WorkspaceError(LunogenError, ValueError):
    """A file operation in an agent's workspace was refused. The message is fit for a model."""

    status_code = 400
    error = "Workspace error"


class WorkspacePathError(WorkspaceError):
    """The path escapes the workspace, goes through a forbidden link, or names the wrong kind."""


class WorkspaceNotFoundError(WorkspacePathError):
    status_code = 404


class WorkspaceQuotaError(WorkspaceError):
    """The write would pass the workspace quota or the file size limit."""

    status_code = 413


class WorkspaceUnavailableError(WorkspaceError):
    """The workspace's image could not be mounted (or its lock was held too long)."""

    status_code = 503
    error = "Workspace unavailable"


@dataclass(frozen=True)
class QuotaCheck:
    mode: QuotaMode
    bytes: int
    entries: int
    over: bool  # past the quota or the file cap, or not measurable: a run must stop
    full: bool  # the kernel refuses more: no space or no inode left
    detail: str = ""

    def fsize(self, limits: SandboxLimits) -> int:
        """The largest file a run may write: the file size limit or what is left of the quota."""
        if self.over:
            return 0
        return max(0, min(limits.file_size_mb * MIB, limits.workspace_mb * MIB - self.bytes))


def validate_agent_id(agent_id: str) -> str:
    if not isinstance(agent_id, str) or not _AGENT_ID.match(agent_id) or agent_id in {".", ".."}:
        raise WorkspacePathError(f"not a valid agent id for a workspace: {agent_id!r}")
    return agent_id


def split_path(path: str) -> list[str]:
    """A workspace-relative path as components, `..` resolved lexically; refuses escapes.

    `/workspace/...` (how code inside the sandbox names it) is accepted as relative.
    """
    if not isinstance(path, str) or "\x00" in path:
        raise WorkspacePathError("path contains a NUL byte")
    rel = path
    if rel.startswith("/"):
        if rel == WORKSPACE_MOUNT or rel.startswith(WORKSPACE_MOUNT + "/"):
            rel = rel[len(WORKSPACE_MOUNT) :]
        else:
            raise WorkspacePathError(f"path escapes the workspace: {path}")
    parts: list[str] = []
    for part in rel.split("/"):
        if part in {"", "."}:
            continue
        if part == "..":
            if not parts:
                raise WorkspacePathError(f"path escapes the workspace: {path}")
            parts.pop()
        else:
            parts.append(part)
    return parts


def _display(parts: list[str]) -> str:
    return "/".join(parts) or "."


class Workspace:
    """One agent's workspace directory. `owner` (uid, gid), when set, owns everything we write.

    With `kernel_quota`, the first run gives the workspace its own ext4 image (`diskimage`);
    a workspace that has an image is mounted before any use, whoever asks."""

    def __init__(
        self, root: Path, *, owner: tuple[int, int] | None = None, kernel_quota: bool = False
    ) -> None:
        self.root = root
        self.owner = owner
        self.kernel_quota = kernel_quota
        self.image = WorkspaceImage(root)

    # -- lifecycle -----------------------------------------------------------------------------

    def ensure(self) -> None:
        self.root.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._attach()
        try:
            self.root.mkdir(mode=0o700)
        except FileExistsError:
            st = os.lstat(self.root)
            if not stat.S_ISDIR(st.st_mode):
                raise WorkspacePathError("the workspace is not a directory") from None
        if self.owner is not None:
            st = os.lstat(self.root)
            if (st.st_uid, st.st_gid) != self.owner:
                os.chown(self.root, *self.owner, follow_symlinks=False)

    def exists(self) -> bool:
        return self.root.is_dir() and not self.root.is_symlink()

    @property
    def quota_mode(self) -> QuotaMode:
        return "kernel" if self.image.mounted() else "watcher"

    def prepare(self, limits: SandboxLimits) -> QuotaMode:
        """Make the workspace ready for a run: mounted if it has an image; given one first
        when `kernel_quota` is on; grown after a plan upgrade. Returns how the quota holds.

        Raises WorkspaceUnavailableError when an existing image cannot be mounted (running on
        the directory beneath it would hide what the run writes)."""
        self.ensure()
        if self.image.exists():
            if self.image.needs_growing(limits):
                self._grow(limits)
            return "kernel"
        if not self.kernel_quota:
            return "watcher"
        with self.image.lock(exclusive=True, make_dir=True) as locked:
            if not locked:
                raise WorkspaceUnavailableError("the workspace is busy; try again")
            if self.image.exists():  # made by another process meanwhile
                self.image.mount(owner=self.owner)
                return "kernel"
            try:
                self.image.create(limits, owner=self.owner)
            except (ImageError, OSError) as exc:
                if self.image.exists():
                    raise WorkspaceUnavailableError(
                        f"the workspace image could not be mounted: {exc}"
                    ) from exc
                log.warning("sandbox.quota_fallback", workspace=self.root.name, error=str(exc))
                return "watcher"
        log.info("sandbox.workspace_image", workspace=self.root.name, quota_mb=limits.workspace_mb)
        return "kernel"

    def _grow(self, limits: SandboxLimits) -> None:
        """Grow the image after a plan upgrade, if no run holds it now (else at a later run)."""
        with self.image.lock(exclusive=True, timeout=0) as locked:
            grown = locked and self.image.grow(limits, owner=self.owner)
        if not self.image.mounted():
            raise WorkspaceUnavailableError("the workspace image could not be mounted again")
        log.info(
            "sandbox.workspace_grown" if grown else "sandbox.workspace_grow_deferred",
            workspace=self.root.name,
            quota_mb=limits.workspace_mb,
        )

    def _attach(self) -> None:
        """Mount the workspace's image if it has one that is not mounted (after a reboot)."""
        if self.image.mounted() or not self.image.exists():
            return
        with self.image.lock(exclusive=True) as locked:
            if not locked:
                raise WorkspaceUnavailableError("the workspace is busy; try again")
            try:
                self.image.mount(owner=self.owner)
            except (ImageError, OSError) as exc:
                raise WorkspaceUnavailableError(
                    f"the workspace image could not be mounted: {exc}"
                ) from exc

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Held by a run or a file operation: nothing unmounts, converts or grows the workspace
        meanwhile."""
        self._attach()
        with self.image.lock(exclusive=False) as locked:
            if not locked:
                raise WorkspaceUnavailableError("the workspace is busy; try again")
            yield

    def hold(self) -> contextlib.ExitStack:
        """`in_use()` until the returned stack is closed (for a run, held across awaits)."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.in_use())
        return stack

    def destroy(self) -> None:
        """Remove the workspace, its image and everything in it, whatever its shape."""
        if self.root.is_symlink():
            self.root.unlink()
            return
        if self.image.dir.is_dir():
            # A run still going keeps its own view of a lazily unmounted image until it ends.
            with self.image.lock(exclusive=True) as locked:
                if not locked:
                    log.warning("sandbox.destroy_unlocked", workspace=self.root.name)
                self.image.delete()
                self._remove_root()
        else:
            self._remove_root()

    def _remove_root(self) -> None:
        if not os.path.lexists(self.root):
            return
        parent = os.open(self.root.parent, _DIR_FLAGS)
        try:
            tree.remove(self.root.name, dir_fd=parent)
        finally:
            os.close(parent)

    # -- safe resolution -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _open_parent(self, parts: list[str], *, create: bool = False) -> Iterator[tuple[int, str]]:
        """(fd of the directory holding the last component, its name). Links in the directory
        part are followed only inside the workspace; the last component is returned unresolved."""
        if not parts:
            raise WorkspacePathError("the path names the workspace itself, not a file")
        fd, _resolved, name = self._walk(parts, create=create, follow_last=False)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def _root_fd(self) -> int:
        try:
            return os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            raise WorkspaceNotFoundError("the workspace does not exist yet") from None

    def _walk(
        self, parts: list[str], *, create: bool, follow_last: bool
    ) -> tuple[int, list[str], str]:
        """Walk `parts` from the root. Returns (fd of the final directory, its components,
        the last name or "" when follow_last resolved everything into the fd)."""
        original = _display(parts)
        if len(parts) > _MAX_PATH_PARTS:
            raise WorkspacePathError(f"path has more than {_MAX_PATH_PARTS} components")
        stack: list[int] = [self._root_fd()]
        resolved: list[str] = []
        todo = list(parts)
        links = 0
        try:
            while todo:
                part = todo.pop(0)
                if part == "..":
                    if not resolved:
                        raise WorkspacePathError(f"path escapes the workspace: {original}")
                    os.close(stack.pop())
                    resolved.pop()
                    continue
                last = not todo
                try:
                    st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if last and not follow_last:
                        return stack.pop(), resolved, part
                    if not create:
                        raise WorkspaceNotFoundError(
                            f"no such file or directory: {original}"
                        ) from None
                    os.mkdir(part, mode=0o755, dir_fd=stack[-1])
                    self._chown_at(stack[-1], part)
                    st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > _MAX_LINKS:
                        raise WorkspacePathError(f"too many symbolic links: {original}")
                    target = os.readlink(part, dir_fd=stack[-1])
                    todo = self._link_parts(target, original) + todo
                    if len(todo) + len(resolved) > _MAX_PATH_PARTS:
                        raise WorkspacePathError(f"path goes too deep: {original}")
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                        resolved.clear()
                    continue
                if last and not follow_last:
                    return stack.pop(), resolved, part
                if not stat.S_ISDIR(st.st_mode):
                    raise WorkspacePathError(f"not a directory: {_display([*resolved, part])}")
                try:
                    fd = os.open(part, _DIR_FLAGS, dir_fd=stack[-1])
                except OSError as exc:  # swapped for a link or removed since the stat
                    raise WorkspacePathError(f"path changed while opening: {original}") from exc
                stack.append(fd)
                resolved.append(part)
            return stack.pop(), resolved, ""
        finally:
            for fd in stack:
                os.close(fd)

    @staticmethod
    def _link_parts(target: str, original: str) -> list[str]:
        if target.startswith("/"):
            if target == WORKSPACE_MOUNT or target.startswith(WORKSPACE_MOUNT + "/"):
                target = target[len(WORKSPACE_MOUNT) :]
            else:
                raise WorkspacePathError(
                    f"path goes through a symbolic link that leaves the workspace: {original}"
                )
        return [p for p in target.split("/") if p not in {"", "."}]

    def _resolve_leaf(self, parts: list[str]) -> tuple[int, str, os.stat_result | None]:
        """(dir fd, name, lstat of name or None) with a link at the end followed inside."""
        links = 0
        while True:
            fd, resolved, name = self._walk(parts, create=False, follow_last=False)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return fd, name, None
            if not stat.S_ISLNK(st.st_mode):
                return fd, name, st
            links += 1
            target = os.readlink(name, dir_fd=fd)
            os.close(fd)
            if links > _MAX_LINKS:
                raise WorkspacePathError(f"too many symbolic links: {_display(parts)}")
            rest = self._link_parts(target, _display(parts))
            parts = rest if target.startswith("/") else [*resolved, *rest]
            if not parts:
                raise WorkspacePathError("the path names the workspace itself, not a file")
            parts = split_path("/".join(parts))

    def _chown_at(self, dir_fd: int, name: str) -> None:
        if self.owner is not None:
            os.chown(name, *self.owner, dir_fd=dir_fd, follow_symlinks=False)

    # -- operations ----------------------------------------------------------------------------

    def read(self, path: str, *, max_bytes: int) -> bytes:
        with self.in_use():
            return self._read(path, max_bytes=max_bytes)

    def _read(self, path: str, *, max_bytes: int) -> bytes:
        parts = split_path(path)
        if not parts:
            raise WorkspacePathError("the path names the workspace itself, not a file")
        dir_fd, name, st = self._resolve_leaf(parts)
        try:
            if st is None:
                raise WorkspaceNotFoundError(f"no such file: {_display(parts)}")
            if stat.S_ISDIR(st.st_mode):
                raise WorkspacePathError(f"is a directory, not a file: {_display(parts)}")
            if not stat.S_ISREG(st.st_mode):
                raise WorkspacePathError(f"not a regular file: {_display(parts)}")
            try:
                fd = os.open(
                    name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
                )
            except OSError as exc:
                raise WorkspacePathError(f"cannot open {_display(parts)}: {exc.strerror}") from exc
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise WorkspacePathError(f"not a regular file: {_display(parts)}")
                return handle.read(max(0, max_bytes))
        finally:
            os.close(dir_fd)

    def write(self, path: str, data: bytes, *, limits: SandboxLimits) -> None:
        parts = split_path(path)
        if len(data) > limits.file_size_mb * MIB:
            raise WorkspaceQuotaError(
                f"file too large: {len(data)} bytes, the limit is {limits.file_size_mb} MB"
            )
        if not parts:
            raise WorkspacePathError("the path names the workspace itself, not a file")
        self.ensure()
        with self.in_use(), _refused_as_quota(limits):
            self._write(parts, data, limits=limits)

    def _write(self, parts: list[str], data: bytes, *, limits: SandboxLimits) -> None:
        if len(parts) > 1:  # the directories count in the check below, once made
            fd, _, _ = self._walk(parts[:-1], create=True, follow_last=True)
            os.close(fd)
        dir_fd, name, st = self._resolve_leaf(parts)
        try:
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise WorkspacePathError(f"not a regular file: {_display(parts)}")
            existing = st.st_size if st is not None else 0
            self._check_quota(len(data) - existing, limits, new_entries=int(st is None))
            try:
                fd = os.open(
                    name,
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o644,
                    dir_fd=dir_fd,
                )
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise WorkspacePathError(f"cannot write {_display(parts)}: {exc.strerror}") from exc
            try:
                with os.fdopen(fd, "wb") as handle:
                    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                        raise WorkspacePathError(f"not a regular file: {_display(parts)}")
                    handle.write(data)
                    if self.owner is not None:
                        os.fchown(handle.fileno(), *self.owner)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) and st is None:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=dir_fd)  # no half-written new file
                raise
        finally:
            os.close(dir_fd)

    def list_files(
        self, path: str = ".", *, recursive: bool = False, limit: int = 500
    ) -> list[FileEntry]:
        parts = split_path(path)
        if not parts and not self.exists():
            return []
        with self.in_use():
            if parts:
                fd, resolved, _ = self._walk(parts, create=False, follow_last=True)
            else:
                fd, resolved = self._root_fd(), []
            try:
                return tree.list_entries(fd, resolved, recursive=recursive, limit=max(0, limit))
            except tree.TreeChangedError as exc:
                changing = f"{_display(parts)} kept changing while it was listed"
                raise WorkspaceError(changing) from exc
            finally:
                os.close(fd)

    def delete(self, path: str) -> None:
        parts = split_path(path)
        with self.in_use(), self._open_parent(parts) as (dir_fd, name):
            try:
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            tree.remove(name, dir_fd=dir_fd)

    def replace_dir(self, dest: str, files: Mapping[str, bytes], *, limits: SandboxLimits) -> None:
        """Make directory `dest` hold exactly `files` (relative paths under it)."""
        self.ensure()
        with self.in_use(), _refused_as_quota(limits):
            self._replace_dir(dest, files, limits=limits)

    def _replace_dir(self, dest: str, files: Mapping[str, bytes], *, limits: SandboxLimits) -> None:
        dest_parts = split_path(dest)
        if not dest_parts:
            raise WorkspacePathError("copy_in needs a directory inside the workspace, not its root")
        cleaned: dict[tuple[str, ...], bytes] = {}
        for rel, data in files.items():
            rel_parts = split_path(rel)
            if not rel_parts or rel.startswith("/"):
                raise WorkspacePathError(f"not a relative file path: {rel}")
            if len(data) > limits.file_size_mb * MIB:
                raise WorkspaceQuotaError(
                    f"file too large: {rel} ({len(data)} bytes), the limit is "
                    f"{limits.file_size_mb} MB"
                )
            cleaned[tuple(rel_parts)] = data
        new_entries = 1 + len({part for key in cleaned for part in _prefixes(key)})  # + dest
        with self._open_parent(dest_parts, create=True) as (dir_fd, name):
            old = _subtree_usage(name, dir_fd, limits)
            self._check_quota(
                sum(map(len, cleaned.values())) - old.bytes,
                limits,
                new_entries=new_entries - old.entries,
            )
            staging = f".{name}.lunogen-{uuid.uuid4().hex[:8]}"
            os.mkdir(staging, 0o755, dir_fd=dir_fd)
            self._chown_at(dir_fd, staging)
            try:
                stage_fd = os.open(staging, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    for rel_key, content in cleaned.items():
                        self._write_new(stage_fd, list(rel_key), content)
                finally:
                    os.close(stage_fd)
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        tree.remove(name, dir_fd=dir_fd)
                    else:
                        os.unlink(name, dir_fd=dir_fd)
                os.rename(staging, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    tree.remove(staging, dir_fd=dir_fd)
                raise

    def _write_new(self, root_fd: int, parts: list[str], data: bytes) -> None:
        fds: list[int] = []
        cur = root_fd
        try:
            for part in parts[:-1]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=cur)
                    self._chown_at(cur, part)
                try:
                    cur = os.open(part, _DIR_FLAGS, dir_fd=cur)
                except OSError as exc:
                    raise WorkspacePathError(f"not a directory: {'/'.join(parts)}") from exc
                fds.append(cur)
            fd = os.open(
                parts[-1],
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=cur,
            )
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if self.owner is not None:
                    os.fchown(handle.fileno(), *self.owner)
        except IsADirectoryError as exc:
            raise WorkspacePathError(f"both a file and a directory: {'/'.join(parts)}") from exc
        finally:
            for fd in fds:
                os.close(fd)

    # -- quota ---------------------------------------------------------------------------------

    def check(self, limits: SandboxLimits) -> QuotaCheck:
        """Where the workspace stands against `limits`. In the kernel mode this is one statfs;
        otherwise a walk that stops, counting as over quota, past the file cap or MAX_DEPTH."""
        if self.image.mounted():
            used = self.image.usage()
            over_bytes = used.bytes > limits.workspace_mb * MIB
            over_entries = used.entries > limits.max_files
            return QuotaCheck(
                mode="kernel",
                bytes=used.bytes,
                entries=used.entries,
                over=over_bytes or over_entries,
                full=used.free_bytes < _FULL_MARGIN or used.free_entries == 0,
                detail="over the file cap" if over_entries else "",
            )
        measured = self._measure(limits.max_files)
        over_bytes = measured.bytes > limits.workspace_mb * MIB
        over_entries = measured.entries > limits.max_files
        detail = ""
        if over_entries:
            detail = "over the file cap"
        elif not measured.complete:
            detail = f"not measurable within {limits.max_files} entries and {tree.MAX_DEPTH} levels"
        return QuotaCheck(
            mode="watcher",
            bytes=measured.bytes,
            entries=measured.entries,
            over=over_bytes or over_entries or not measured.complete,
            full=False,
            detail=detail,
        )

    def _measure(self, max_entries: int) -> tree.TreeUsage:
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            return tree.TreeUsage(bytes=0, entries=0, complete=True)
        try:
            return tree.measure(fd, max_entries=max_entries)
        finally:
            os.close(fd)

    def usage(self) -> int:
        """Bytes the workspace holds: allocated in its image (kernel mode), or of its regular
        files (hard links counted once), as far as a walk of at most a million entries gets."""
        if self.image.mounted():
            return self.image.usage().bytes
        return self._measure(1_000_000).bytes

    def _check_quota(self, growth: int, limits: SandboxLimits, *, new_entries: int = 0) -> None:
        if growth <= 0 and new_entries <= 0:
            return
        now = self.check(limits)
        if now.entries + max(new_entries, 0) > limits.max_files:
            raise WorkspaceQuotaError(
                f"workspace file limit reached: it holds {now.entries} files and directories, "
                f"the limit is {limits.max_files}"
            )
        if now.over or now.bytes + max(growth, 0) > limits.workspace_mb * MIB:
            raise WorkspaceQuotaError(
                f"workspace quota exceeded: {now.bytes} bytes used, {max(growth, 0)} more would "
                f"pass the {limits.workspace_mb} MB quota"
                + (f" ({now.detail})" if now.detail else "")
            )


@contextlib.contextmanager
def _refused_as_quota(limits: SandboxLimits) -> Iterator[None]:
    """The kernel's ENOSPC (an image out of space or inodes) as a WorkspaceQuotaError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise WorkspaceQuotaError(
            f"workspace quota exceeded: the workspace is full ({limits.workspace_mb} MB, "
            f"{limits.max_files} files)"
        ) from exc


def _prefixes(key: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Every path a file at `key` needs: its directories and itself."""
    for end in range(1, len(key) + 1):
        yield key[:end]


def _subtree_usage(name: str, dir_fd: int, limits: SandboxLimits) -> tree.TreeUsage:
    """What `name` in `dir_fd` holds now, which replacing it frees. Nothing when it is missing,
    or too big or deep to measure: nothing is freed on credit."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return tree.TreeUsage(bytes=0, entries=0, complete=True)
    if not stat.S_ISDIR(st.st_mode):
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        return tree.TreeUsage(bytes=size, entries=1, complete=True)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        measured = tree.measure(fd, max_entries=limits.max_files)
    finally:
        os.close(fd)
    if not measured.complete:
        return tree.TreeUsage(bytes=0, entries=0, complete=False)
    return tree.TreeUsage(bytes=measured.bytes, entries=measured.entries + 1, complete=True)
