"""The host-side setup of a bwrap run in one exec: a small C helper built once per machine.

Before bwrap may start, its process must (as root) enter a private mount namespace and bind the
workspace onto a root-owned mount point, join the run's cgroups, take the run's rlimits and
become the agent's uid. `unshare`, `sh`, `mount`, `prlimit` and `unshare --setuid` did that in
five execs and a fork, 4-5 ms per run more than this helper, which makes the same system calls
in the same order in the one process that then execs bwrap. It is compiled with the machine's
`cc` the first time a backend starts, under a name that fingerprints its source, in a directory
only the platform's user can write; without a compiler (or where the result cannot run) the
backend keeps the exec chain, which does the same thing more slowly.

Arguments, all from the backend (nothing is parsed from a sandbox):

    WORKSPACE MOUNT_POINT UID GID N JOIN_FILE*N M (RESOURCE SOFT HARD)*M -- COMMAND...

MOUNT_POINT "" means no mount namespace and no bind; UID and GID -1 keep the platform's ids.
Every step fails closed: the helper prints `lunogen-sandbox: <what failed>` and exits 1 before
COMMAND runs. Cgroups are joined by writing "0" to their `tasks` (see `limits.JOIN_FILE`); the
helper is single-threaded, so that moves the whole process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

LAUNCHER_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <unistd.h>

static void fail(const char *what, const char *arg) {
    int err = errno;
    dprintf(2, "lunogen-sandbox: %s %s: %s\n", what, arg, strerror(err));
    _exit(1);
}

static void bad_arguments(void) {
    dprintf(2, "lunogen-sandbox: the launcher was given bad arguments\n");
    _exit(1);
}

static unsigned long long number(const char *text, unsigned long long max) {
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || value > max) bad_arguments();
    return value;
}

static long long id(const char *text) {
    return strcmp(text, "-1") == 0 ? -1 : (long long)number(text, 0xFFFFFFFEULL);
}

int main(int argc, char **argv) {
    int i = 1;
    if (argc < 9) bad_arguments();
    const char *workspace = argv[i++];
    const char *mount_point = argv[i++];
    const char *uid_text = argv[i], *gid_text = argv[i + 1];
    long long uid = id(argv[i++]);
    long long gid = id(argv[i++]);
    int joins = (int)number(argv[i++], 16);
    if (i + joins >= argc) bad_arguments();
    char **join = argv + i;
    i += joins;
    int limits = (int)number(argv[i++], 16);
    if (i + 3 * limits >= argc) bad_arguments();
    char **limit = argv + i;
    i += 3 * limits;
    if (strcmp(argv[i], "--") != 0 || i + 1 >= argc) bad_arguments();
    char **command = argv + i + 1;

    if (mount_point[0]) {
        if (unshare(CLONE_NEWNS)) fail("could not make a mount namespace", "");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) fail("could not make / private", "");
        if (mount(workspace, mount_point, NULL, MS_BIND, NULL)) fail("could not bind", workspace);
    }
    for (int k = 0; k < joins; k++) {
        int fd = open(join[k], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) fail("could not join the cgroup", join[k]);
        close(fd);
    }
    for (int k = 0; k < limits; k++) {
        struct rlimit value;
        int resource = (int)number(limit[3 * k], 64);
        value.rlim_cur = number(limit[3 * k + 1], ~0ULL);
        value.rlim_max = number(limit[3 * k + 2], ~0ULL);
        if (setrlimit(resource, &value)) fail("could not set rlimit", limit[3 * k]);
    }
    if (gid >= 0) {
        if (setgroups(0, NULL)) fail("could not drop the supplementary groups", "");
        gid_t g = (gid_t)gid;
        if (setresgid(g, g, g)) fail("could not change to gid", gid_text);
    }
    if (uid >= 0) {
        uid_t u = (uid_t)uid;
        if (setresuid(u, u, u)) fail("could not change to uid", uid_text);
        if (uid != 0 && setuid(0) == 0) {
            errno = EPERM;
            fail("could still regain uid 0 after changing to", uid_text);
        }
    }
    execv(command[0], command);
    fail("could not run", command[0]);
    return 1;
}
"""
NAME_PREFIX = "launch-"
SELF_TEST_TIMEOUT = 10.0
BUILD_TIMEOUT = 60.0


class LauncherUnavailableError(RuntimeError):
    """The helper cannot be built or run here; the backend uses the exec chain instead."""


def fingerprint() -> str:
    return hashlib.sha256(LAUNCHER_C.encode()).hexdigest()[:16]


def launcher_argv(
    binary: str,
    *,
    workspace: str,
    mount_point: str | None,
    owner: tuple[int, int] | None,
    join_files: Sequence[str],
    limits: Sequence[tuple[int, tuple[int, int]]],
    command: Sequence[str],
) -> list[str]:
    uid, gid = owner if owner is not None else (-1, -1)
    argv = [binary, workspace, mount_point or "", str(uid), str(gid), str(len(join_files))]
    argv += join_files
    argv.append(str(len(limits)))
    for which, (soft, hard) in limits:
        argv += [str(which), str(soft), str(hard)]
    argv.append("--")
    argv += command
    return argv


def default_directory() -> Path:
    """Where the helper is kept: beside the sandbox's mount points as root, else in a private
    per-user directory under the temp dir."""
    if os.geteuid() == 0:
        return Path("/run/lunogen-sandbox")
    return Path(tempfile.gettempdir()) / f"lunogen-sandbox-{os.geteuid()}"


def _trusted(path: Path, *, directory: bool) -> bool:
    """Owned by us, of the expected kind and writable by no one else (the helper runs as root)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    kind = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    return kind and st.st_uid == os.geteuid() and not st.st_mode & 0o022


@functools.cache
def launcher_binary(directory: Path) -> str:
    """The path of a working helper in `directory`, built there on first use (once per machine
    and source); LauncherUnavailableError when it cannot be built or does not run."""
    directory.mkdir(mode=0o755 if os.geteuid() == 0 else 0o700, parents=True, exist_ok=True)
    if not _trusted(directory, directory=True):
        raise LauncherUnavailableError(f"{directory} is writable by others or not ours")
    target = directory / f"{NAME_PREFIX}{fingerprint()}"
    if not target.exists():
        _build(directory, target)
    if not _trusted(target, directory=False):
        raise LauncherUnavailableError(f"{target} is writable by others or not ours")
    _self_test(str(target))
    return str(target)


def _build(directory: Path, target: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise LauncherUnavailableError("no C compiler (cc) to build it")
    staging = Path(tempfile.mkdtemp(prefix=".launch-", dir=directory))
    try:
        source = staging / "launch.c"
        binary = staging / "launch"
        source.write_text(LAUNCHER_C)
        try:
            done = subprocess.run(  # noqa: S603
                [compiler, "-O2", "-Wall", "-o", str(binary), str(source)],
                capture_output=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise LauncherUnavailableError(f"{compiler} failed: {exc}") from exc
        if done.returncode != 0 or not binary.is_file():
            message = done.stderr.decode(errors="replace").strip()[-500:]
            raise LauncherUnavailableError(f"{compiler} failed: {message}")
        binary.chmod(0o755)
        os.replace(binary, target)  # atomic: concurrent builders publish the same program
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _self_test(binary: str) -> None:
    """The helper runs here (its directory may be mounted noexec) and execs its command."""
    argv = launcher_argv(
        binary,
        workspace="",
        mount_point=None,
        owner=None,
        join_files=[],
        limits=[],
        command=[shutil.which("true") or "/bin/true"],
    )
    try:
        done = subprocess.run(  # noqa: S603
            argv, capture_output=True, timeout=SELF_TEST_TIMEOUT, check=False, env={}
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise LauncherUnavailableError(f"{binary} does not run: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        raise LauncherUnavailableError(f"{binary} does not run: {message}")


def find_launcher(directory: Path | None = None) -> str | None:
    """The helper's path, or None (logged once) when the backend must use the exec chain."""
    place = directory if directory is not None else default_directory()
    try:
        return launcher_binary(place)
    except (LauncherUnavailableError, OSError) as exc:
        _log_unavailable(str(place), str(exc))
        return None


@functools.cache
def _log_unavailable(place: str, reason: str) -> None:
    log.warning("sandbox.launcher_unavailable", directory=place, reason=reason, fallback="chain")
