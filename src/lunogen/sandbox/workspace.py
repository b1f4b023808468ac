"""Agent workspaces on the host, and the platform's file access to them.

A workspace is `<workspaces_dir>/<agent_id>`. Sandboxed code owns its contents, so the
platform treats every name in it as hostile: paths are resolved one component at a time with
`openat(O_NOFOLLOW)` from a directory fd of the workspace root, `..` is resolved lexically and may
never leave the root, and a symbolic link is followed only when its target (read, not trusted)
stays inside the workspace. A swap of a checked directory for a link between two calls cannot
redirect us: every step opens relative to the fd of the previous one.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lunogen.errors import LunogenError
from lunogen.sandbox.base import WORKSPACE_MOUNT, SandboxLimits

MIB = 1024 * 1024
# Agent ids are uuids today; any single, plain path component is accepted.
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the workspace root, with "/" separators
    size: int
    is_dir: bool


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
    """One agent's workspace directory. `owner` (uid, gid), when set, owns everything we write."""

    def __init__(self, root: Path, *, owner: tuple[int, int] | None = None) -> None:
        self.root = root
        self.owner = owner

    # -- lifecycle -----------------------------------------------------------------------------

    def ensure(self) -> None:
        self.root.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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

    def destroy(self) -> None:
        if self.root.is_symlink():
            self.root.unlink()
        elif self.root.exists():
            parent = os.open(self.root.parent, _DIR_FLAGS)
            try:
                _rmtree(self.root.name, dir_fd=parent)
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
        if len(parts) > 1:
            fd, _, _ = self._walk(parts[:-1], create=True, follow_last=True)
            os.close(fd)
        dir_fd, name, st = self._resolve_leaf(parts)
        try:
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise WorkspacePathError(f"not a regular file: {_display(parts)}")
            existing = st.st_size if st is not None else 0
            self._check_quota(len(data) - existing, limits)
            try:
                fd = os.open(
                    name,
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o644,
                    dir_fd=dir_fd,
                )
            except OSError as exc:
                raise WorkspacePathError(f"cannot write {_display(parts)}: {exc.strerror}") from exc
            with os.fdopen(fd, "wb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise WorkspacePathError(f"not a regular file: {_display(parts)}")
                handle.write(data)
                if self.owner is not None:
                    os.fchown(handle.fileno(), *self.owner)
        finally:
            os.close(dir_fd)

    def list_files(
        self, path: str = ".", *, recursive: bool = False, limit: int = 500
    ) -> list[FileEntry]:
        parts = split_path(path)
        if not parts and not self.exists():
            return []
        if parts:
            fd, resolved, _ = self._walk(parts, create=False, follow_last=True)
        else:
            fd, resolved = self._root_fd(), []
        entries: list[FileEntry] = []
        try:
            self._list_into(fd, resolved, entries, recursive=recursive, limit=max(0, limit))
        finally:
            os.close(fd)
        return entries

    def _list_into(
        self, fd: int, prefix: list[str], out: list[FileEntry], *, recursive: bool, limit: int
    ) -> None:
        with os.scandir(fd) as it:
            children = sorted(it, key=lambda e: e.name)
        for entry in children:
            if len(out) >= limit:
                return
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            rel = [*prefix, entry.name]
            out.append(
                FileEntry(path="/".join(rel), size=0 if is_dir else st.st_size, is_dir=is_dir)
            )
            if recursive and is_dir:
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    self._list_into(child, rel, out, recursive=True, limit=limit)
                finally:
                    os.close(child)

    def delete(self, path: str) -> None:
        parts = split_path(path)
        with self._open_parent(parts) as (dir_fd, name):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                _rmtree(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)

    def replace_dir(self, dest: str, files: Mapping[str, bytes], *, limits: SandboxLimits) -> None:
        """Make directory `dest` hold exactly `files` (relative paths under it)."""
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
        self.ensure()
        with self._open_parent(dest_parts, create=True) as (dir_fd, name):
            old = _tree_size(name, dir_fd)
            self._check_quota(sum(map(len, cleaned.values())) - old, limits)
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
                        _rmtree(name, dir_fd=dir_fd)
                    else:
                        os.unlink(name, dir_fd=dir_fd)
                os.rename(staging, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    _rmtree(staging, dir_fd=dir_fd)
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

    def usage(self) -> int:
        """Bytes held by regular files in the workspace (hard links counted once)."""
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            return 0
        try:
            return _fd_tree_size(fd, set())
        finally:
            os.close(fd)

    def _check_quota(self, growth: int, limits: SandboxLimits) -> None:
        if growth <= 0:
            return
        quota = limits.workspace_mb * MIB
        used = self.usage()
        if used + growth > quota:
            raise WorkspaceQuotaError(
                f"workspace quota exceeded: {used} bytes used, {growth} more would pass the "
                f"{limits.workspace_mb} MB quota"
            )


def _fd_tree_size(fd: int, seen: set[tuple[int, int]]) -> int:
    total = 0
    try:
        it = os.scandir(fd)
    except OSError:
        return 0
    with it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_size
            elif stat.S_ISDIR(st.st_mode):
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    total += _fd_tree_size(child, seen)
                finally:
                    os.close(child)
    return total


def _tree_size(name: str, dir_fd: int) -> int:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if not stat.S_ISDIR(st.st_mode):
        return 0
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        return _fd_tree_size(fd, set())
    finally:
        os.close(fd)


def _rmtree(name: str, *, dir_fd: int | None = None) -> None:
    """Remove a tree without following links; makes directories the sandbox locked writable."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
            os.fchmod(fd, 0o700)
        with os.scandir(fd) as it:
            children = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in it]
        for child, is_dir in children:
            if is_dir:
                _rmtree(child, dir_fd=fd)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dir_fd)
