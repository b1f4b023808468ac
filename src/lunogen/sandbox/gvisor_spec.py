"""What a gVisor run sees: the shared read-only root skeleton and /etc snapshot, and the OCI
`config.json` of one run.

The root of every container is an empty skeleton directory (mount points, plus the host's
/bin, /lib, /lib64, /sbin links on merged-/usr systems); /usr and an /etc snapshot are bound
read-only, the workspace read-write, /proc and a private /tmp are the sentry's own. The snapshot
holds only the /etc files programs need (never shadow or private keys) and is shared by all
runs; passwd and group name the run's uid and are written per run, beside `config.json`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lunogen.sandbox.base import WORKSPACE_MOUNT, SandboxLimits
from lunogen.sandbox.bwrap import SYSTEM_DIRS
from lunogen.sandbox.etc_snapshot import publish, snapshot_path, start_snapshot
from lunogen.sandbox.limits import MIB

HOSTNAME = "lunoedge"
# Where the sandbox looks for the statx shim (inside the /etc snapshot).
SHIM_INSIDE = "/etc/lunoedge/statx-compat.so"
MOUNT_POINTS = ("usr", "etc", "proc", "dev", "tmp", WORKSPACE_MOUNT.strip("/"))

# gVisor releases before 2023 refuse statx()/fstatat() with AT_NO_AUTOMOUNT (EINVAL), which
# coreutils' `ls` always passes. There are no automount points inside a sandbox, so dropping
# the flag changes nothing else. Preloaded (through /etc/ld.so.preload) into every program.
STATX_SHIM_C = r"""
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <unistd.h>

#define AT_NO_AUTOMOUNT 0x800

struct stat;
struct stat64;
struct statx;

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    return (int)syscall(SYS_statx, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}

int fstatat(int dirfd, const char *path, struct stat *buf, int flags) {
    return (int)syscall(SYS_newfstatat, dirfd, path, buf, flags & ~AT_NO_AUTOMOUNT);
}

int fstatat64(int dirfd, const char *path, struct stat64 *buf, int flags) {
    return (int)syscall(SYS_newfstatat, dirfd, path, buf, flags & ~AT_NO_AUTOMOUNT);
}
"""


def build_rootfs(parent: Path) -> Path:
    """The empty, read-only root every container starts from."""
    layout = [f"dir:{name}" for name in MOUNT_POINTS]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            layout.append(f"link:{path.lstrip('/')}:{os.readlink(path)}")
        elif os.path.isdir(path):
            layout.append(f"dir:{path.lstrip('/')}")
    target = parent / f"rootfs-{hashlib.sha256(repr(layout).encode()).hexdigest()[:16]}"
    if target.is_dir():
        return target
    staging = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=parent))
    for item in layout:
        kind, _, rest = item.partition(":")
        if kind == "dir":
            (staging / rest).mkdir(parents=True, exist_ok=True)
        else:
            name, _, dest = rest.partition(":")
            (staging / name).symlink_to(dest)
    return publish(staging, target)


def _compile_shim(dest: Path) -> bool:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return False
    source = dest.with_suffix(".c")
    source.write_text(STATX_SHIM_C)
    try:
        done = subprocess.run(  # noqa: S603
            [cc, "-O2", "-shared", "-fPIC", "-o", str(dest), str(source)],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        source.unlink(missing_ok=True)
    return done.returncode == 0 and dest.is_file()


def build_etc(parent: Path, *, statx_shim: bool) -> tuple[Path, bool]:
    """(the /etc snapshot, whether it preloads the statx shim). Rebuilt when a source changes."""
    target = snapshot_path(parent, f"shim={statx_shim};{STATX_SHIM_C}")
    if target.is_dir():
        return target, (target / SHIM_INSIDE.removeprefix("/etc/")).is_file()
    staging = start_snapshot(parent)
    (staging / "hosts").write_text(
        f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    (staging / "hostname").write_text(f"{HOSTNAME}\n")
    for name in ("passwd", "group"):  # mount points: the real ones are bound per run
        (staging / name).write_text("")
    shimmed = False
    if statx_shim:
        shim = staging / SHIM_INSIDE.removeprefix("/etc/")
        shim.parent.mkdir(parents=True, exist_ok=True)
        shimmed = _compile_shim(shim)
        if shimmed:
            (staging / "ld.so.preload").write_text(f"{SHIM_INSIDE}\n")
    return publish(staging, target), shimmed


def identity_files(uid: int, gid: int) -> dict[str, str]:
    return {
        "passwd": (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"sandbox:x:{uid}:{gid}:LunoEdge sandbox:{WORKSPACE_MOUNT}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "group": f"root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n",
    }


# The sentry implements namespaces, mount and ptrace itself, so none of them reaches the host;
# they are refused anyway (as in the bwrap backend) so that sandboxed code cannot build a
# different view of its sandbox. Loaded inside the sentry (runsc --oci-seccomp).
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACE_FLAGS = (
    0x00020000,
    0x02000000,
    0x04000000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
DENIED_SYSCALLS = (
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "ptrace",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
)


def seccomp_profile() -> dict[str, Any]:
    eperm = {"action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), **eperm},
            # (flags & NEWxx) == NEWxx, one rule per flag: conditions of one rule all hold.
            *(
                {
                    "names": ["clone"],
                    **eperm,
                    "args": [
                        {"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}
                    ],
                }
                for flag in CLONE_NAMESPACE_FLAGS
            ),
            # clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes libc
            # fall back to clone.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }


def _rlimit(name: str, value: int) -> dict[str, Any]:
    return {"type": f"RLIMIT_{name}", "soft": value, "hard": value}


def build_spec(
    *,
    argv: Sequence[str],
    env: Mapping[str, str],
    uid: int,
    gid: int,
    rootfs: Path,
    etc: Path,
    bundle: Path,
    workspace: Path,
    limits: SandboxLimits,
    fsize_bytes: int,
) -> dict[str, Any]:
    """The OCI runtime spec of one run.

    Limits enforced by the sentry itself: RLIMIT_NPROC (per uid, and each run has its own
    sentry, so exactly this run's processes), RLIMIT_NOFILE, RLIMIT_FSIZE, RLIMIT_CORE and
    RLIMIT_CORE. gVisor does not enforce RLIMIT_CPU nor RLIMIT_DATA for mmap (both are set for
    programs that read them): CPU time and memory are bounded by the run's host cgroup, which
    the backend owns (runsc runs with --ignore-cgroups), so `linux.resources` stays empty.
    RLIMIT_AS is left unlimited, as in the other backends: runtimes that reserve address space
    up front (Go, V8, the JVM) would fail under it.
    """
    cpu = max(1, int(limits.cpu_seconds))
    memory = limits.memory_mb * MIB
    ro = ["rbind", "ro", "nosuid", "nodev"]
    return {
        "ociVersion": "1.0.2",
        "hostname": HOSTNAME,
        "root": {"path": str(rootfs), "readonly": True},
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": []},
            "args": list(argv),
            "env": [f"{key}={value}" for key, value in env.items()],
            "cwd": WORKSPACE_MOUNT,
            "capabilities": {
                "bounding": [],
                "effective": [],
                "inheritable": [],
                "permitted": [],
                "ambient": [],
            },
            "rlimits": [
                _rlimit("CPU", cpu),
                _rlimit("DATA", memory),
                _rlimit("NPROC", limits.processes),
                _rlimit("NOFILE", limits.open_files),
                _rlimit("FSIZE", fsize_bytes),
                _rlimit("CORE", 0),
            ],
            "noNewPrivileges": True,
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/tmp",  # noqa: S108
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", f"size={memory}"],
            },
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ro},
            *(
                {"destination": path, "type": "bind", "source": path, "options": ro}
                for path in SYSTEM_DIRS
                if os.path.isdir(path) and not os.path.islink(path)
            ),
            {"destination": "/etc", "type": "bind", "source": str(etc), "options": ro},
            *(
                {
                    "destination": f"/etc/{name}",
                    "type": "bind",
                    "source": str(bundle / name),
                    "options": ro,
                }
                for name in ("passwd", "group")
            ),
            {
                "destination": WORKSPACE_MOUNT,
                "type": "bind",
                "source": str(workspace),
                "options": ["rbind", "rw", "nosuid", "nodev"],
            },
        ],
        "linux": {
            "namespaces": [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"],
            "seccomp": seccomp_profile(),
        },
    }
