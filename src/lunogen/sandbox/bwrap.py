"""The bubblewrap backend: namespaces, a read-only system, one writable workspace, seccomp.

Each run is `bwrap` with new user, PID, network (loopback only), IPC, UTS, mount and cgroup
namespaces, all capabilities dropped, no_new_privs (bwrap always sets it), nested user namespaces
disabled, and the filter of `sandbox.seccomp`. The root is an empty tmpfs made read-only at the
end; into it go /usr (read-only), the /bin, /lib, /lib64, /sbin links or binds, a handful of /etc
files (never /etc/shadow or /etc/ssl/private; passwd and group are generated), a fresh /proc, a
minimal /dev, a private /tmp, and the agent's workspace read-write at /workspace (cwd and HOME).

Host identity. When the platform runs as root, the run (bwrap included) runs as an unprivileged
host uid derived from the agent id (`agent_uid`), owner of its workspace: RLIMIT_NPROC then
counts (it never applies to root), the kernel keeps agents apart even if a namespace were
escaped, and a file another agent's code made cannot be opened. bwrap resolves bind sources with
that uid's rights, and the data dir is (rightly) closed to it, so the run first enters a
private mount namespace and binds the workspace onto a root-owned, world-traversable mount point.
As a normal user, runs keep the platform's uid (bwrap maps it to uid 1000 inside).

Launch. The steps before bwrap are never done by a Python `preexec_fn` (or `user=`): either
makes CPython fork() the whole platform process instead of vfork(), which costs ~15 ms at 130 MB
and grows with it. They are done by `sandbox.launcher`, a small C helper built once per machine,
in the one process that then execs bwrap: as root, a private mount namespace (propagation
private) and the bind of the workspace onto the mount point; the run's cgroups (writing "0" to
their `tasks`, see `limits.JOIN_FILE`); the rlimits (exact bytes); the agent's gid and uid,
supplementary groups dropped (a uid change from root clears every capability); then exec bwrap.
Where the helper cannot be built (no `cc`) the same steps are an exec chain of util-linux
programs: `unshare --mount --propagation private`, `sh` (cgroups, `mount --bind`), `prlimit`,
`unshare --setuid --setgid`, then bwrap (~4 ms slower). Either way each step fails closed:
nothing runs when one of them fails. All run before any sandboxed code, with the platform's pid
(exec keeps it), so --die-with-parent, the session and the wall-time kill see the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from lunogen.sandbox import launcher, seccomp
from lunogen.sandbox.base import (
    WORKSPACE_MOUNT,
    Backend,
    RunResult,
    SandboxLimits,
    SandboxUnavailableError,
)
from lunogen.sandbox.etc_snapshot import publish, snapshot_path, start_snapshot
from lunogen.sandbox.limits import (
    JOIN_FILE,
    MIB,
    Cgroups,
    RunCgroup,
    prlimit_args,
    rlimits,
)
from lunogen.sandbox.runner import Launch, starting_fsize, supervise
from lunogen.sandbox.workspace import Workspace

BWRAP = "bwrap"
INSIDE_UID = 1000
# Per-agent host uids/gids: [2^30, 2^31 - 2^16), far above any real account.
UID_BASE = 1 << 30
UID_SPAN = (1 << 30) - (1 << 16)
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
# What programs need from /etc; everything else (shadow, ssl/private, the host's secrets) stays out.
SYSTEM_DIRS: tuple[str, ...] = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
MOUNT_ROOT = Path("/run/lunogen-sandbox")
TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
SETUP_ERROR = b"lunogen-sandbox: "
# Run by /bin/sh (as root, in the run's private mount namespace) before the rest of the chain:
# $1 = mount binary, $2 = workspace, $3 = mount point ("" = no bind), then the cgroup `tasks`
# files to join (sh is single-threaded: moving its one thread moves the process), "--", and the
# command to exec. Only our own paths and argv: nothing is parsed.
SETUP_SCRIPT = """
mount=$1 ws=$2 mp=$3
shift 3
while [ "$1" != -- ]; do
  printf 0 > "$1" || { echo "lunogen-sandbox: could not join the cgroup $1" >&2; exit 1; }
  shift
done
shift
if [ -n "$mp" ]; then
  why=$("$mount" --bind "$ws" "$mp" 2>&1) || {
    echo "lunogen-sandbox: could not bind $ws: $why" >&2; exit 1; }
fi
exec "$@"
"""


def agent_uid(agent_id: str) -> int:
    digest = hashlib.sha256(agent_id.encode()).digest()
    return UID_BASE + int.from_bytes(digest[:8], "big") % UID_SPAN


def _bwrap_path() -> str | None:
    return shutil.which(BWRAP, path="/usr/bin:/usr/local/bin:/bin")


def _tools(as_root: bool) -> dict[str, str]:
    """Absolute paths of the launch chain's programs; SandboxUnavailableError if one is missing."""
    names = ("sh", "prlimit", "unshare", "mount") if as_root else ("sh", "prlimit")
    found = {name: shutil.which(name, path=TOOL_PATH) for name in names}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        raise SandboxUnavailableError(
            f"bwrap backend needs {', '.join(missing)} (apt-get install util-linux)"
        )
    return {name: path for name, path in found.items() if path is not None}


def _etc_texts() -> dict[str, str]:
    return {
        "passwd": (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"sandbox:x:{INSIDE_UID}:{INSIDE_UID}:LunoEdge sandbox:{WORKSPACE_MOUNT}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "group": f"root:x:0:\nsandbox:x:{INSIDE_UID}:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1\tlocalhost lunoedge\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "hostname": "lunoedge\n",
    }


class BwrapBackend(Backend):
    name: ClassVar[str] = "bwrap"
    isolated: ClassVar[bool] = True

    def __init__(self) -> None:
        binary = _bwrap_path()
        if binary is None:
            raise SandboxUnavailableError("bwrap is not installed (apt-get install bubblewrap)")
        self.binary = binary
        self.as_root = os.geteuid() == 0
        self.tools = _tools(self.as_root)
        # The one-exec setup helper; None: the exec chain of util-linux programs.
        self.launcher: str | None = launcher.find_launcher()
        self.cgroups = Cgroups()
        self._etc_dir = self._write_etc()
        self._mount_point: Path | None = None
        if self.as_root:
            self._mount_point = MOUNT_ROOT / "workspace"
            MOUNT_ROOT.mkdir(mode=0o755, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self._mount_point.mkdir(mode=0o755)
        self._base_args = self._static_args()

    # -- availability --------------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _probe()

    # -- identity ------------------------------------------------------------------------------

    def workspace_owner(self, workspace: Path) -> tuple[int, int] | None:
        if not self.as_root:
            return None
        uid = agent_uid(workspace.name)
        return uid, uid

    # -- the command line ----------------------------------------------------------------------

    def _write_etc(self) -> Path:
        """A snapshot of the /etc the sandbox sees, bound as one mount (one bind per file
        costs ~0.5 ms each per run). Rebuilt when the backend starts."""
        if self.as_root:
            MOUNT_ROOT.mkdir(mode=0o755, exist_ok=True)
            parent = MOUNT_ROOT
        else:
            parent = Path(tempfile.mkdtemp(prefix="lunogen-sandbox-"))
        target = snapshot_path(parent, repr(sorted(_etc_texts().items())))
        if target.is_dir():
            return target
        staging = start_snapshot(parent)
        for name, text in _etc_texts().items():
            (staging / name).write_text(text)
        return publish(staging, target)

    def _static_args(self) -> list[str]:
        args = [
            self.binary,
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--uid",
            str(INSIDE_UID),
            "--gid",
            str(INSIDE_UID),
            "--hostname",
            "lunoedge",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += ["--ro-bind", str(self._etc_dir), "/etc"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        return args

    def _argv(
        self, source: str, argv: Sequence[str], *, limits: SandboxLimits, seccomp_fd: int
    ) -> list[str]:
        return [
            *self._base_args,
            "--size",
            str(limits.memory_mb * MIB),
            "--tmpfs",
            "/tmp",  # noqa: S108
            "--bind",
            source,
            WORKSPACE_MOUNT,
            "--chdir",
            WORKSPACE_MOUNT,
            "--remount-ro",
            "/",
            "--seccomp",
            str(seccomp_fd),
            "--",
            *argv,
        ]

    def _launcher(
        self,
        *,
        workspace: str,
        cgroup: RunCgroup | None,
        limits: list[tuple[int, tuple[int, int]]],
        owner: tuple[int, int] | None,
        command: list[str],
    ) -> list[str]:
        """`command` (bwrap's argv) behind the setup of the host side of a run."""
        join_files = [str(path / JOIN_FILE) for path in cgroup.paths.values()] if cgroup else []
        if self.launcher is not None:
            return launcher.launcher_argv(
                self.launcher,
                workspace=workspace,
                mount_point=str(self._mount_point) if self._mount_point is not None else None,
                owner=owner,
                join_files=join_files,
                limits=limits,
                command=command,
            )
        return self._chain(
            workspace=workspace, join_files=join_files, limits=limits, owner=owner, command=command
        )

    def _chain(
        self,
        *,
        workspace: str,
        join_files: list[str],
        limits: list[tuple[int, tuple[int, int]]],
        owner: tuple[int, int] | None,
        command: list[str],
    ) -> list[str]:
        """The same setup as the helper's, by util-linux programs that exec each other."""
        chain = list(command)
        if owner is not None:
            uid, gid = owner
            chain = [self.tools["unshare"], f"--setuid={uid}", f"--setgid={gid}", "--", *chain]
        if limits:
            chain = [self.tools["prlimit"], *prlimit_args(limits), "--", *chain]
        if join_files or self._mount_point is not None:
            mount_point = str(self._mount_point) if self._mount_point is not None else ""
            chain = [
                self.tools["sh"],
                "-c",
                SETUP_SCRIPT,
                "lunogen-sandbox",
                self.tools.get("mount", ""),
                workspace,
                mount_point,
                *join_files,
                "--",
                *chain,
            ]
        if self._mount_point is not None:
            unshare = self.tools["unshare"]
            chain = [unshare, "--mount", "--propagation", "private", "--", *chain]
        return chain

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
        owner = self.workspace_owner(workspace)
        space = Workspace(workspace, owner=owner)
        fsize = await starting_fsize(space, limits)
        cgroup: RunCgroup | None = None
        if self.cgroups.available:
            try:
                cgroup = self.cgroups.create(run_id, limits, launcher_processes=2)
            except OSError:
                cgroup = None
        if self.as_root:
            # Per-agent uid: NPROC counts all of this agent's concurrent runs; pids.max (when
            # the cgroup exists) bounds each run exactly.
            nproc: int | None = (
                limits.processes * 4 if cgroup is not None else limits.processes
            ) + 4
        else:
            nproc = None  # the platform's own uid: its threads would count against the limit
        limit_list = rlimits(limits, fsize_bytes=fsize, nproc=nproc)
        try:
            seccomp_fd = seccomp.filter_fd()
        except seccomp.SeccompUnavailableError as exc:
            if cgroup is not None:
                cgroup.remove()
            raise SandboxUnavailableError(str(exc)) from exc

        source = str(self._mount_point) if self._mount_point is not None else str(workspace)
        launch = Launch(
            argv=self._launcher(
                workspace=str(workspace),
                cgroup=cgroup,
                limits=limit_list,
                owner=owner,
                command=self._argv(source, argv, limits=limits, seccomp_fd=seccomp_fd),
            ),
            env=_environment(env),
            cwd="/",
            pass_fds=(seccomp_fd,),
            signals_as_status=True,
            fsize_bytes=fsize,
            cgroup=cgroup,
            close_after_start=[seccomp_fd],
        )
        try:
            result = await supervise(launch, workspace=space, limits=limits, stdin=stdin)
        finally:
            if cgroup is not None:
                await _remove_cgroup(cgroup)
        if result.exit_code == 1 and result.stderr.startswith((b"bwrap: ", SETUP_ERROR)):
            raise SandboxUnavailableError(
                "bwrap could not set up the sandbox: "
                + result.stderr.decode(errors="replace").strip()
            )
        return result


async def _remove_cgroup(cgroup: RunCgroup) -> None:
    if not cgroup.try_remove():  # the usual case needs no thread hop
        await asyncio.to_thread(cgroup.remove)


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = {"LANG": "C.UTF-8"}
    merged.update(env or {})
    merged.update(PATH=SAFE_PATH, HOME=WORKSPACE_MOUNT, TMPDIR="/tmp", USER="sandbox")  # noqa: S108
    return merged


@functools.cache
def _probe() -> str | None:
    """Why bwrap cannot run here, found by running a real (empty) sandbox; None when it can."""
    binary = _bwrap_path()
    if binary is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    try:
        seccomp.filter_bpf()
    except seccomp.SeccompUnavailableError as exc:
        return str(exc)
    try:
        backend = BwrapBackend()
    except (OSError, SandboxUnavailableError) as exc:
        return f"bwrap backend setup failed: {exc}"
    with tempfile.TemporaryDirectory(prefix="lunogen-probe-") as tmp:
        ws = Path(tmp) / "probe-agent"
        owner = backend.workspace_owner(ws)
        Workspace(ws, owner=owner).ensure()
        fd = seccomp.filter_fd()
        source = str(backend._mount_point) if backend._mount_point is not None else str(ws)
        limits = SandboxLimits(
            cpu_seconds=5,
            memory_mb=256,
            processes=16,
            open_files=64,
            file_size_mb=1,
            workspace_mb=1,
            wall_seconds=10,
        )
        launcher = backend._launcher(
            workspace=str(ws),
            cgroup=None,
            limits=[],
            owner=owner,
            command=backend._argv(source, ["/bin/true"], limits=limits, seccomp_fd=fd),
        )
        try:
            proc = subprocess.run(  # noqa: S603
                launcher,
                env=_environment(None),
                cwd="/",
                pass_fds=(fd,),
                capture_output=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bwrap did not start: {exc}"
        finally:
            os.close(fd)
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"
            return f"bwrap cannot create a sandbox here: {message}"
    return None
