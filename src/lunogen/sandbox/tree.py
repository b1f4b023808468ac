"""Walks of a workspace tree that survive any tree sandboxed code can make.

Sandboxed code can build a directory chain of any depth (`mkdir d; cd d` in a loop: PATH_MAX
does not limit it), any width, links that loop, FIFOs, and modes that lock its owner out. So
these walks use no recursion, and hold at most three file descriptors at any time, whatever the
depth: the directory being read (plus the duplicate `scandir` makes of it) and, while moving,
its child or its parent. A walk goes back up through `..` and checks that it reached the very
directory it came down from (st_dev, st_ino); when the tree was rearranged under it, the walk
raises `TreeChangedError` and the caller starts again. Links are never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Deeper than this, the polling quota check gives up and counts the workspace as over quota.
MAX_DEPTH = 512
_ATTEMPTS = 3  # walks of a tree that keeps changing under us
_REVISITS = 10_000  # directories refilled while we removed them, before destroy gives up


class TreeChangedError(OSError):
    """The tree moved under a walk (a parent is no longer the one we came from)."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the workspace root, with "/" separators
    size: int
    is_dir: bool


@dataclass(frozen=True)
class TreeUsage:
    bytes: int  # of regular files (hard links counted once)
    entries: int  # every name: files, directories, links, FIFOs...
    complete: bool  # False when the walk stopped at a cap or could not read part of the tree


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class _Cursor:
    """A position in a tree: one open directory, and the path (names and identities) down to it
    from where the walk started."""

    def __init__(self, fd: int) -> None:
        self.fd = fd  # owned
        self._idents = [_ident(fd)]
        self.names: list[str] = []

    @property
    def depth(self) -> int:
        return len(self.names)

    def down(self, name: str) -> None:
        child = os.open(name, DIR_FLAGS, dir_fd=self.fd)
        try:
            ident = _ident(child)
        except OSError:
            os.close(child)
            raise
        os.close(self.fd)
        self.fd = child
        self._idents.append(ident)
        self.names.append(name)

    def up(self) -> str:
        parent = os.open("..", DIR_FLAGS, dir_fd=self.fd)
        if _ident(parent) != self._idents[-2]:
            os.close(parent)
            raise TreeChangedError(errno.ESTALE, "the tree changed during the walk")
        os.close(self.fd)
        self.fd = parent
        self._idents.pop()
        return self.names.pop()

    def close(self) -> None:
        os.close(self.fd)


# -- measuring -----------------------------------------------------------------------------------


def measure(dir_fd: int, *, max_entries: int, max_depth: int = MAX_DEPTH) -> TreeUsage:
    """Bytes and entries under the directory `dir_fd` (not closed). Stops, incomplete, past
    `max_entries` entries or `max_depth` levels, or when part of the tree cannot be read."""
    for _ in range(_ATTEMPTS):
        try:
            return _measure_once(dir_fd, max_entries=max_entries, max_depth=max_depth)
        except TreeChangedError:
            continue
    return TreeUsage(bytes=0, entries=0, complete=False)


class _Tally:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.bytes = 0
        self.entries = 0
        self.seen: set[tuple[int, int]] = set()

    def scan(self, fd: int) -> list[str] | None:
        """Counts the entries of directory `fd`; its subdirectories, or None when it could not
        be read or the entry cap was passed."""
        subdirs: list[str] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    self.entries += 1
                    if self.entries > self.max_entries:
                        return None
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        if st.st_nlink > 1:
                            key = (st.st_dev, st.st_ino)
                            if key in self.seen:
                                continue
                            self.seen.add(key)
                        self.bytes += st.st_size
                    elif stat.S_ISDIR(st.st_mode):
                        subdirs.append(entry.name)
        except OSError:
            return None
        return subdirs

    def result(self, *, complete: bool) -> TreeUsage:
        return TreeUsage(bytes=self.bytes, entries=self.entries, complete=complete)


def _measure_once(dir_fd: int, *, max_entries: int, max_depth: int) -> TreeUsage:
    tally = _Tally(max_entries)
    cursor = _Cursor(os.dup(dir_fd))
    try:
        first = tally.scan(cursor.fd)
        if first is None:
            return tally.result(complete=False)
        pending = [first]
        while True:
            if pending[-1]:
                name = pending[-1].pop()
                if cursor.depth >= max_depth:
                    return tally.result(complete=False)
                try:
                    cursor.down(name)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # gone, or no longer a directory, since the scan
                except OSError as exc:
                    if exc.errno == errno.ELOOP:  # replaced by a link since the scan
                        continue
                    return tally.result(complete=False)
                subdirs = tally.scan(cursor.fd)
                if subdirs is None:
                    return tally.result(complete=False)
                pending.append(subdirs)
            elif cursor.depth == 0:
                return tally.result(complete=True)
            else:
                cursor.up()
                pending.pop()
    finally:
        cursor.close()


# -- listing -------------------------------------------------------------------------------------


def list_entries(dir_fd: int, prefix: list[str], *, recursive: bool, limit: int) -> list[FileEntry]:
    """The entries under directory `dir_fd` (not closed) in name order, each directory followed
    by its contents when `recursive`, at most `limit` of them. Unreadable directories are
    listed but not entered."""
    for _ in range(_ATTEMPTS):
        try:
            return _list_once(dir_fd, prefix, recursive=recursive, limit=limit)
        except TreeChangedError:
            continue
    raise TreeChangedError(errno.ESTALE, "the directory kept changing while it was listed")


def _sorted_names(fd: int) -> list[str]:
    """Names of directory `fd`, last first (so that pop() gives them in order)."""
    try:
        with os.scandir(fd) as it:
            names = [entry.name for entry in it]
    except OSError:
        return []
    names.sort(reverse=True)
    return names


def _list_once(dir_fd: int, prefix: list[str], *, recursive: bool, limit: int) -> list[FileEntry]:
    out: list[FileEntry] = []
    cursor = _Cursor(os.dup(dir_fd))
    try:
        pending = [_sorted_names(cursor.fd)]
        while len(out) < limit:
            if pending[-1]:
                name = pending[-1].pop()
                try:
                    st = os.stat(name, dir_fd=cursor.fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                rel = [*prefix, *cursor.names, name]
                out.append(
                    FileEntry(path="/".join(rel), size=0 if is_dir else st.st_size, is_dir=is_dir)
                )
                if recursive and is_dir:
                    try:
                        cursor.down(name)
                    except OSError:
                        continue
                    pending.append(_sorted_names(cursor.fd))
            elif cursor.depth == 0:
                break
            else:
                cursor.up()
                pending.pop()
    finally:
        cursor.close()
    return out


# -- removing ------------------------------------------------------------------------------------


def remove(name: str, *, dir_fd: int) -> None:
    """Remove `name` in directory `dir_fd` and everything under it, without following links.

    Directories that lock their owner out (mode 000) are opened up first; only what we own can
    be, so a platform running as root removes anything, and otherwise anything its own runs
    made. Something the sandbox adds meanwhile is removed too."""
    for attempt in range(_ATTEMPTS):
        try:
            _remove_once(name, dir_fd)
            return
        except OSError as exc:  # moved, or filled again, under us: start over
            changed = isinstance(exc, TreeChangedError) or exc.errno == errno.ENOTEMPTY
            if not changed or attempt == _ATTEMPTS - 1:
                raise


def _open_writable(name: str, dir_fd: int) -> int:
    """A descriptor of directory `name` that lets us read it and remove its entries."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        _chmod_dir(name, dir_fd)
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o700 != 0o700:
            os.fchmod(fd, mode | 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _chmod_dir(name: str, dir_fd: int) -> None:
    """chmod u+rwx on directory `name`, never through a link (it may be swapped for one)."""
    path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", name)
        os.chmod(f"/proc/self/fd/{path_fd}", stat.S_IMODE(st.st_mode) | 0o700)
    finally:
        os.close(path_fd)


def _clear_files(fd: int) -> list[str]:
    """Unlink every entry of directory `fd` that is not a directory; its subdirectories."""
    with os.scandir(fd) as it:
        entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in it]
    subdirs: list[str] = []
    for child, is_dir in entries:
        if is_dir:
            subdirs.append(child)
            continue
        try:
            os.unlink(child, dir_fd=fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # replaced by a directory since the scan
            subdirs.append(child)
    return subdirs


def _remove_once(name: str, dir_fd: int) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return
    cursor = _Cursor(_open_writable(name, dir_fd))
    revisits = 0
    try:
        pending = [_clear_files(cursor.fd)]
        while True:
            if pending[-1]:
                child = pending[-1].pop()
                try:
                    cursor.down(child)
                except FileNotFoundError:
                    continue
                except PermissionError:
                    revisits += 1
                    if revisits > _REVISITS:
                        raise
                    _chmod_dir(child, cursor.fd)
                    pending[-1].append(child)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(child, dir_fd=cursor.fd)  # no longer a directory
                    continue
                mode = stat.S_IMODE(os.fstat(cursor.fd).st_mode)
                if mode & 0o700 != 0o700:
                    os.fchmod(cursor.fd, mode | 0o700)
                pending.append(_clear_files(cursor.fd))
            elif cursor.depth == 0:
                break
            else:
                child = cursor.up()
                pending.pop()
                try:
                    os.rmdir(child, dir_fd=cursor.fd)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.ENOTEMPTY:
                        raise
                    revisits += 1  # filled again while we emptied it
                    if revisits > _REVISITS:
                        raise
                    pending[-1].append(child)
    finally:
        cursor.close()
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dir_fd)
