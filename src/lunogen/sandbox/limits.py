"""Enforcing SandboxLimits on a run: rlimits set in the child, cgroup v1 groups per run.

Per process (rlimits, inherited by everything the run starts): CPU seconds (SIGXCPU, then
SIGKILL a second later), data segment (private writable memory: malloc fails, Python raises
MemoryError), open files, file size (SIGXFSZ), no core files, and processes per user id.
RLIMIT_AS is not used: runtimes that reserve address space up front (Go, V8, JVM) fail under it
long before they use that much memory.

Per run, where /sys/fs/cgroup/<controller> is writable (cgroup v1, as root): a group
`lunogen/<run_id>` in `memory` (limit_in_bytes, and memsw when swap accounting is on), `pids`
(pids.max: the exact bound on processes of this run) and `cpuacct` (CPU time of the whole run,
all processes together). The child joins them before it execs, so nothing escapes them.

The child joins by writing "0" to each group's `tasks` (`JOIN_FILE`), which moves the writing
thread, not to `cgroup.procs`, which moves its whole thread group: the kernel then takes the
global threadgroup rwsem for writing, and that waits for an RCU grace period (~9 ms on a 2-vCPU
host, HZ=250), the largest single cost of a run. The joining process is single-threaded (a
fork()ed child, the bwrap launcher or its fallback `sh`), so its one thread is the whole process
and everything it execs or forks afterwards starts inside the groups.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from lunogen.sandbox.base import SandboxLimits

MIB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "lunogen"
CONTROLLERS = ("memory", "pids", "cpuacct")
JOIN_FILE = "tasks"  # v1: "0" moves the writing thread (see the module docstring)


def rlimits(
    limits: SandboxLimits, *, fsize_bytes: int, nproc: int | None
) -> list[tuple[int, tuple[int, int]]]:
    cpu = max(1, int(limits.cpu_seconds))
    out = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_DATA, (limits.memory_mb * MIB, limits.memory_mb * MIB)),
        (resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files)),
        (resource.RLIMIT_FSIZE, (fsize_bytes, fsize_bytes)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    if nproc is not None:
        out.append((resource.RLIMIT_NPROC, (nproc, nproc)))
    return out


_PRLIMIT_OPTIONS: dict[int, str] = {
    resource.RLIMIT_CPU: "--cpu",
    resource.RLIMIT_DATA: "--data",
    resource.RLIMIT_NOFILE: "--nofile",
    resource.RLIMIT_FSIZE: "--fsize",
    resource.RLIMIT_CORE: "--core",
    resource.RLIMIT_NPROC: "--nproc",
}


def prlimit_args(limit_list: list[tuple[int, tuple[int, int]]]) -> list[str]:
    """The options of util-linux `prlimit [options] -- command` that set `limit_list` (exact
    byte values, unlike a shell's `ulimit`, which counts some limits in 512-byte blocks)."""
    return [f"{_PRLIMIT_OPTIONS[which]}={soft}:{hard}" for which, (soft, hard) in limit_list]


@dataclass
class RunCgroup:
    """One run's groups. `procs_fds` are open for writing `JOIN_FILE` in the child."""

    paths: dict[str, Path]
    procs_fds: list[int] = field(default_factory=list)

    def join_in_child(self) -> None:
        for fd in self.procs_fds:
            os.write(fd, b"0")  # "0" = the writing thread, here the whole (forked) process

    def close_fds(self) -> None:
        for fd in self.procs_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.procs_fds.clear()

    def _read(self, controller: str, name: str) -> str:
        path = self.paths.get(controller)
        if path is None:
            return ""
        try:
            return (path / name).read_text()
        except OSError:
            return ""

    def memory_hit(self) -> bool:
        failcnt = self._read("memory", "memory.failcnt").strip()
        oom = self._read("memory", "memory.oom_control")
        kills = 0
        for line in oom.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                kills = int(value)
        return kills > 0 or (failcnt.isdigit() and int(failcnt) > 0)

    def pids_hit(self) -> bool:
        for line in self._read("pids", "pids.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max" and value.strip().isdigit() and int(value) > 0:
                return True
        return False

    def cpu_seconds(self) -> float | None:
        usage = self._read("cpuacct", "cpuacct.usage").strip()
        return int(usage) / 1e9 if usage.isdigit() else None

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.paths.values():
            try:
                text = (path / "cgroup.procs").read_text()
            except OSError:
                continue
            found.update(int(p) for p in text.split() if p.isdigit())
        return found

    def live_pids(self) -> set[int]:
        """The run's processes that can still act (a zombie cannot)."""
        return {pid for pid in self.pids() if not _is_zombie(pid)}

    def kill_all(self) -> None:
        """SIGKILL every process of the run, until none is left (a fork bomb races us)."""
        for _ in range(50):
            pids = self.live_pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)

    def kill_once(self) -> list[int]:
        """SIGKILL every live process of the run once, through a pidfd of each, and return the
        pidfds (the caller closes them): readable when that process has exited, which is after
        it left the cgroup. So the caller waits for the cgroup to empty on its event loop
        instead of polling (`kill_all` sleeps 2 ms a round; a cgroup still busy at removal
        costs a 5 ms retry). A pid is signalled only if still listed once its pidfd is open,
        so a pid reused meanwhile is never touched."""
        opened: dict[int, int] = {}
        for pid in self.pids():
            if _is_zombie(pid):
                continue
            with contextlib.suppress(OSError):
                opened[pid] = os.pidfd_open(pid)
        members = self.pids() if opened else set()
        fds: list[int] = []
        for pid, fd in opened.items():
            if pid not in members:
                os.close(fd)
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            fds.append(fd)
        return fds

    def try_remove(self) -> bool:
        """Removes the groups if they are empty now (a few µs each), without waiting or
        killing; False when one is still busy (then `remove()`, which waits, in a thread)."""
        self.close_fds()
        for path in self.paths.values():
            try:
                path.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                return False
        return True

    def remove(self) -> None:
        self.close_fds()
        for path in self.paths.values():
            for attempt in range(40):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if attempt == 10:
                        self.kill_all()
                    time.sleep(0.005)


def _is_zombie(pid: int) -> bool:
    """Exited, not yet reaped: still listed in its cgroup, nothing left to kill."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")


class Cgroups:
    """The writable cgroup v1 controllers of this machine, probed once."""

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.parents: dict[str, Path] = {}
        for controller in CONTROLLERS:
            parent = root / controller / CGROUP_PARENT
            try:
                parent.mkdir(exist_ok=True)
            except OSError:
                continue
            if (parent / "cgroup.procs").exists() and os.access(parent, os.W_OK):
                self.parents[controller] = parent
        # pids.max must also be settable; memory must have limit_in_bytes (v1).
        if (
            "memory" in self.parents
            and not (self.parents["memory"] / "memory.limit_in_bytes").exists()
        ):
            del self.parents["memory"]
        self.memsw = "memory" in self.parents and (
            (self.parents["memory"] / "memory.memsw.limit_in_bytes").exists()
        )

    @property
    def available(self) -> bool:
        return bool(self.parents)

    def describe(self) -> str:
        return ", ".join(sorted(self.parents)) or "none (cgroup tree not writable)"

    def create(
        self, run_id: str, limits: SandboxLimits, *, launcher_processes: int = 0
    ) -> RunCgroup:
        """Groups for one run, limits written, `cgroup.procs` opened. Caller removes them.

        `launcher_processes`: processes the backend itself keeps in the group (bwrap's own two),
        so that the command gets exactly `limits.processes`."""
        run = RunCgroup(paths={})
        try:
            for controller, parent in self.parents.items():
                path = parent / run_id
                path.mkdir()
                run.paths[controller] = path
                if controller == "memory":
                    limit = str(limits.memory_mb * MIB)
                    (path / "memory.limit_in_bytes").write_text(limit)
                    if self.memsw:
                        with contextlib.suppress(OSError):
                            (path / "memory.memsw.limit_in_bytes").write_text(limit)
                elif controller == "pids":
                    (path / "pids.max").write_text(str(limits.processes + launcher_processes))
                run.procs_fds.append(os.open(path / JOIN_FILE, os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            run.remove()
            raise
        return run
