"""The gVisor backend: each run is its own `runsc` sandbox, a user-space kernel between the
command and the host.

A run is one OCI bundle (`config.json`, the run's passwd and group, runsc's logs) in a fresh
directory under the state dir, started with `runsc run` as container `lunogen-<run_id>`:
`--network=none` (loopback only), no capabilities, no_new_privs, the agent's host uid
(`bwrap.agent_uid`, owner of its workspace) inside, rlimits the sentry enforces (processes, open
files, file size, core). runsc itself runs with `--ignore-cgroups` inside the run's own cgroup
(`limits.Cgroups`): the sentry, the gofer and the ptrace platform's host tasks are all in it, so
memory (limit plus the sentry's own overhead) and CPU time cover the whole sandbox, and the
shared supervisor (`runner.supervise`) kills all of it at the wall time. Whatever happens, the
container's state, its cgroup and its bundle are removed when the run ends.

Process limit: RLIMIT_NPROC is enforced inside the sentry, not on host tasks (the sentry's own
threads would hit a host pids limit first and crash it); the host pids.max is only a backstop.
To report `processes`, runsc straces clone/fork/vfork into the bundle and the backend looks for
one that failed with EAGAIN.

Platform: `LUNOGEN_GVISOR_PLATFORM` (ptrace, systrap or kvm). By default systrap when this
runsc has it (newer than 2023), otherwise ptrace; kvm only when asked for (an openable
/dev/kvm is not a working one: under nested virtualisation the sentry can spin forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from lunogen.sandbox import gvisor_spec
from lunogen.sandbox.base import (
    WORKSPACE_MOUNT,
    Backend,
    RunResult,
    SandboxLimits,
    SandboxUnavailableError,
)
from lunogen.sandbox.bwrap import SAFE_PATH, agent_uid
from lunogen.sandbox.limits import Cgroups, RunCgroup
from lunogen.sandbox.runner import Launch, starting_fsize, supervise
from lunogen.sandbox.workspace import Workspace

RUNSC = "runsc"
STATE_ROOT = Path(os.environ.get("LUNOGEN_GVISOR_ROOT", "/run/lunogen-runsc"))
PLATFORM_ENV = "LUNOGEN_GVISOR_PLATFORM"
PLATFORMS = ("ptrace", "systrap", "kvm")
# What the sandbox itself (sentry, gofer, runsc) may use on top of the command's memory limit.
SENTRY_OVERHEAD_MB = 96
# Host tasks of one sandbox beyond the command's own: Go threads of runsc, the sentry and the
# gofer, and the ptrace platform's tracee tasks (one or two per sandboxed thread).
HOST_TASKS_BASE = 192
HOST_TASKS_PER_PROCESS = 3
TRACED_SYSCALLS = "clone,clone3,fork,vfork"
STRACE_LOG = "strace"  # directory in the bundle
STRACE_LOG_CAP = 8 * 1024 * 1024  # bytes of strace kept before the log is emptied
_FORK_EAGAIN = re.compile(rb" X (?:clone3?|v?fork)\(.*errno=11 ")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")


def _runsc_path() -> str | None:
    return shutil.which(RUNSC, path="/usr/bin:/usr/local/bin:/usr/sbin:/bin")


@functools.cache
def _platforms(binary: str) -> tuple[str, ...]:
    try:
        done = subprocess.run(  # noqa: S603
            [binary, "help", "platforms"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(done.stdout.decode(errors="replace").split())


def choose_platform(binary: str) -> str:
    """The runsc platform to use; SandboxUnavailableError when the one asked for is missing."""
    known = _platforms(binary)
    wanted = os.environ.get(PLATFORM_ENV, "").strip().lower()
    if wanted:
        if wanted not in PLATFORMS or wanted not in known:
            raise SandboxUnavailableError(
                f"{PLATFORM_ENV}={wanted}: this runsc supports {', '.join(known) or 'none'}"
            )
        if wanted == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise SandboxUnavailableError(f"{PLATFORM_ENV}=kvm but /dev/kvm is not usable")
        return wanted
    return "systrap" if "systrap" in known else "ptrace"


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = {"LANG": "C.UTF-8"}
    merged.update(env or {})
    merged.update(PATH=SAFE_PATH, HOME=WORKSPACE_MOUNT, TMPDIR="/tmp", USER="sandbox")  # noqa: S108
    return merged


class GVisorBackend(Backend):
    name: ClassVar[str] = "gvisor"
    isolated: ClassVar[bool] = True

    def __init__(self, *, state_root: Path | None = None) -> None:
        binary = _runsc_path()
        if binary is None:
            raise SandboxUnavailableError("runsc not found on PATH (apt-get install runsc)")
        if os.geteuid() != 0:
            raise SandboxUnavailableError(
                "the gvisor backend needs root (runsc creates namespaces and cgroups)"
            )
        self.binary = binary
        self.platform = choose_platform(binary)
        self.root = Path(state_root) if state_root is not None else STATE_ROOT
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # runsc's container state (`runsc --root <state_dir> list`) and the per-run bundles.
        self.state_dir = self.root / "state"
        self.bundles_dir = self.root / "bundles"
        for path in (self.state_dir, self.bundles_dir):
            path.mkdir(mode=0o700, exist_ok=True)
        self.rootfs = gvisor_spec.build_rootfs(self.root)
        self.etc, self.statx_shim = gvisor_spec.build_etc(self.root, statx_shim=True)
        self.cgroups = Cgroups()

    # -- availability --------------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _probe()

    def workspace_owner(self, workspace: Path) -> tuple[int, int]:
        uid = agent_uid(workspace.name)
        return uid, uid

    # -- the command line ----------------------------------------------------------------------

    def runsc_argv(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "--root",
            str(self.state_dir),
            "--network=none",
            f"--platform={self.platform}",
            "--ignore-cgroups",
            "--oci-seccomp",
            *extra,
        ]

    def _run_argv(self, bundle: Path, container_id: str) -> list[str]:
        return [
            *self.runsc_argv(
                f"--log={bundle / 'runsc.log'}",
                "--strace",
                f"--strace-syscalls={TRACED_SYSCALLS}",
                f"--debug-log={bundle / STRACE_LOG}/",
                "--debug-command=boot",
            ),
            "run",
            "--bundle",
            str(bundle),
            container_id,
        ]

    def write_bundle(
        self,
        bundle: Path,
        workspace: Path,
        argv: Sequence[str],
        *,
        limits: SandboxLimits,
        env: Mapping[str, str] | None,
        fsize_bytes: int,
    ) -> None:
        uid, gid = self.workspace_owner(workspace)
        for name, text in gvisor_spec.identity_files(uid, gid).items():
            (bundle / name).write_text(text)
            (bundle / name).chmod(0o644)
        (bundle / STRACE_LOG).mkdir()
        spec = gvisor_spec.build_spec(
            argv=argv,
            env=_environment(env),
            uid=uid,
            gid=gid,
            rootfs=self.rootfs,
            etc=self.etc,
            bundle=bundle,
            workspace=workspace,
            limits=limits,
            fsize_bytes=fsize_bytes,
        )
        (bundle / "config.json").write_text(json.dumps(spec))

    # -- running -------------------------------------------------------------------------------

    async def run(
        self,
        workspace: Path,
        argv: Sequence[str],
        *,
        limits: SandboxLimits,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        run_id: str,
    ) -> RunResult:
        if not argv:
            raise ValueError("argv is empty")
        if not _RUN_ID.match(run_id):
            raise ValueError(f"run_id is not a valid container id: {run_id!r}")
        container_id = f"lunogen-{run_id}"
        space = Workspace(workspace, owner=self.workspace_owner(workspace))
        await asyncio.to_thread(space.ensure)
        fsize = await starting_fsize(space, limits)
        bundle = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=self.bundles_dir))
        cgroup: RunCgroup | None = None
        try:
            self.write_bundle(bundle, workspace, argv, limits=limits, env=env, fsize_bytes=fsize)
            cgroup = self._create_cgroup(run_id, limits)
            launch = Launch(
                argv=self._run_argv(bundle, container_id),
                env={"PATH": SAFE_PATH},
                cwd=str(bundle),
                preexec=cgroup.join_in_child if cgroup is not None else None,
                signals_as_status=True,
                fsize_bytes=fsize,
                cgroup=cgroup,
            )
            log_watch = asyncio.ensure_future(_cap_strace_log(bundle / STRACE_LOG))
            try:
                result = await supervise(launch, workspace=space, limits=limits, stdin=stdin)
            finally:
                log_watch.cancel()
            failure = _runsc_failure(result, bundle)
            if failure is not None:
                raise SandboxUnavailableError(f"runsc could not run the sandbox: {failure}")
            if result.limit_hit in (None, "output") and _fork_refused(bundle / STRACE_LOG):
                result = dataclasses.replace(result, limit_hit="processes")
            return result
        finally:
            # Shielded: a cancelled run still loses its container, cgroup and bundle.
            await asyncio.shield(asyncio.to_thread(self._cleanup, container_id, bundle, cgroup))

    def _create_cgroup(self, run_id: str, limits: SandboxLimits) -> RunCgroup | None:
        if not self.cgroups.available:
            return None
        host = dataclasses.replace(
            limits,
            memory_mb=limits.memory_mb + SENTRY_OVERHEAD_MB,
        )
        try:
            return self.cgroups.create(
                f"gvisor-{run_id}",
                host,
                launcher_processes=HOST_TASKS_BASE
                + (HOST_TASKS_PER_PROCESS - 1) * limits.processes,
            )
        except OSError:
            return None

    def state_files(self, container_id: str) -> list[Path]:
        return sorted(self.state_dir.glob(f"{container_id}_sandbox:*"))

    def _cleanup(self, container_id: str, bundle: Path, cgroup: RunCgroup | None) -> None:
        """After a run, however it ended: no process, container state, cgroup or bundle left.

        `runsc run` removes its own state when the command exits. After a kill it stays, and
        `runsc delete --force` then waits ~1 s for a sandbox process that is already gone; when
        the run's cgroup shows every process of the sandbox dead (zombies cannot write), its
        state files are removed directly instead."""
        if cgroup is not None:
            cgroup.kill_all()
        if self.state_files(container_id) and (cgroup is None or cgroup.live_pids()):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(  # noqa: S603
                    [*self.runsc_argv(), "delete", "--force", container_id],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
        # What is left is no container's: a run cancelled while `runsc run` was creating one
        # leaves a lock file without a state file, which `runsc delete` does not remove.
        if self.state_files(container_id) and (cgroup is None or not cgroup.live_pids()):
            self._remove_state(container_id)
        if cgroup is not None:
            cgroup.remove()
        shutil.rmtree(bundle, ignore_errors=True)

    def _remove_state(self, container_id: str) -> None:
        """Remove the container's state files, again if a runsc process that was still exiting
        (outside the cgroup: the launcher) writes its lock file back: until none reappears for
        0.2 s, or 3 s have passed."""
        deadline = time.monotonic() + 3.0
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            leftovers = self.state_files(container_id)
            if leftovers:
                for path in leftovers:
                    with contextlib.suppress(OSError):
                        path.unlink()
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= 0.2:
                return
            time.sleep(0.02)


async def _cap_strace_log(directory: Path) -> None:
    """Keep runsc's strace of one run from filling the disk: past the cap, remember whether a
    fork was refused (in a marker file) and empty the log (runsc appends)."""
    while True:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(_trim_strace_logs, directory)


def _trim_strace_logs(directory: Path) -> None:
    for path in list(directory.glob("*.txt")):
        with contextlib.suppress(OSError):
            if path.stat().st_size > STRACE_LOG_CAP:
                if _fork_refused_in(path):
                    (directory / "fork-refused").touch()
                os.truncate(path, 0)


def _fork_refused_in(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return any(_FORK_EAGAIN.search(line) for line in handle)
    except OSError:
        return False


def _fork_refused(directory: Path) -> bool:
    if (directory / "fork-refused").exists():
        return True
    return any(_fork_refused_in(path) for path in directory.glob("*.txt"))


def _runsc_failure(result: RunResult, bundle: Path) -> str | None:
    """runsc's own error when it failed before the command could run, else None."""
    if result.exit_code == 0 or result.limit_hit not in (None, "output"):
        return None
    try:
        text = (bundle / "runsc.log").read_text(errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        if "FATAL ERROR:" in line:
            return line.split("FATAL ERROR:", 1)[1].strip()
    return None


@functools.cache
def _probe() -> str | None:
    """Why gVisor cannot run here, found by running a real (empty) sandbox; None when it can."""
    if _runsc_path() is None:
        return "runsc not found on PATH (apt-get install runsc)"
    try:
        backend = GVisorBackend()
    except SandboxUnavailableError as exc:
        return str(exc)
    except OSError as exc:
        return f"gvisor backend setup failed: {exc}"
    limits = SandboxLimits(
        cpu_seconds=5,
        memory_mb=64,
        processes=8,
        open_files=64,
        file_size_mb=1,
        workspace_mb=1,
        wall_seconds=20,
    )
    with tempfile.TemporaryDirectory(prefix="lunogen-probe-") as tmp:
        workspace = Path(tmp) / "gvisor-probe"
        Workspace(workspace, owner=backend.workspace_owner(workspace)).ensure()
        bundle = Path(tempfile.mkdtemp(prefix="probe-", dir=backend.bundles_dir))
        container_id = f"lunogen-probe-{os.getpid()}"
        try:
            backend.write_bundle(
                bundle, workspace, ["/bin/true"], limits=limits, env=None, fsize_bytes=0
            )
            done = subprocess.run(  # noqa: S603
                [
                    *backend.runsc_argv(f"--log={bundle / 'runsc.log'}"),
                    "run",
                    "--bundle",
                    str(bundle),
                    container_id,
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=limits.wall_seconds,
                check=False,
                cwd=bundle,
            )
        except subprocess.TimeoutExpired:
            return (
                f"runsc (platform {backend.platform}) did not finish a trivial run in "
                f"{limits.wall_seconds:.0f}s"
            )
        except OSError as exc:
            return f"runsc did not start: {exc}"
        finally:
            backend._cleanup(container_id, bundle, None)
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            return (
                f"runsc (platform {backend.platform}) cannot run a sandbox here: "
                f"{message[-1] if message else f'exit {done.returncode}'}"
            )
    return None
