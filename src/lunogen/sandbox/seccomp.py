"""The seccomp filter bwrap loads before it execs the sandboxed command.

Default: allow. Denied with EPERM: the syscalls that create or enter namespaces, mount, trace
other processes, load kernel code, touch keyrings, or reach rarely audited kernel surface.
`clone3` answers ENOSYS (its flags sit behind a pointer a filter cannot read), which makes the C
library fall back to `clone`, whose flags are checked. Syscalls of a foreign ABI (32-bit x86 on
x86-64, x32) kill the process: libseccomp's default for a filter built for the native arch.
The compiled BPF program is built once per process and cached.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile

DENIED_SYSCALLS: tuple[str, ...] = (
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "userfaultfd",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "lookup_dcookie",
    "vhangup",
    "iopl",
    "ioperm",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "nfsservctl",
    "uselib",
)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
)
TIOCSTI = 0x5412  # push characters into the terminal's input
TIOCLINUX = 0x541C


class SeccompUnavailableError(RuntimeError):
    pass


@functools.cache
def filter_bpf() -> bytes:
    """The compiled filter (raw BPF, as `bwrap --seccomp FD` reads it)."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as exc:  # the package, or libseccomp.so.2 under it
        raise SeccompUnavailableError(f"pyseccomp/libseccomp not usable: {exc}") from exc

    deny = sc.ERRNO(errno.EPERM)
    filt = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(deny, name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall on this architecture
    for flag in NAMESPACE_FLAGS:
        filt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # Only the default execution domain: other personalities turn off ASLR or NX semantics.
    # (The 0xffffffff query is refused too, as Flatpak does; common programs never make it.)
    filt.add_rule(deny, "personality", sc.Arg(0, sc.NE, 0))
    for request in (TIOCSTI, TIOCLINUX):
        filt.add_rule(deny, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    with tempfile.TemporaryFile() as out:
        filt.export_bpf(out)
        out.seek(0)
        return out.read()


def filter_fd() -> int:
    """A readable fd holding the filter, positioned at its start; the caller closes it."""
    data = filter_bpf()
    fd = os.memfd_create("lunogen-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd
