"""Start one sandboxed process and watch it: output caps, wall time, quota, CPU, the verdict.

Shared by the bwrap and process backends; what differs between them is the argv and what the
child does before exec (`Launch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from lunogen.sandbox.base import LimitHit, RunResult, SandboxLimits, SandboxUnavailableError
from lunogen.sandbox.limits import MIB, RunCgroup
from lunogen.sandbox.workspace import QuotaCheck, Workspace

log = structlog.get_logger(__name__)

CHUNK = 65536
WATCH_INTERVAL = 0.2  # seconds between quota / CPU checks during a run
# A slow quota check (a walk of many files) waits this many times its own duration before the
# next one, so that the watcher takes at most a third of a CPU.
WATCH_BACKOFF = 2.0
DRAIN_SECONDS = 2.0  # how long to wait for output pipes to close once the run has ended


@dataclass
class Launch:
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str | None = None
    pass_fds: Sequence[int] = ()
    preexec: Callable[[], None] | None = None
    # bwrap reports a command killed by signal N as exit status 128 + N.
    signals_as_status: bool = False
    fsize_bytes: int = 0
    cgroup: RunCgroup | None = None
    close_after_start: list[int] = field(default_factory=list)


class _Capped:
    """Keeps the first `cap` bytes of a stream and drains (and drops) the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.kept = 0
        self.truncated = False

    async def pump(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while True:
            chunk = await stream.read(CHUNK)
            if not chunk:
                return
            room = self.cap - self.kept
            if room > 0:
                self.chunks.append(chunk[:room])
                self.kept += min(room, len(chunk))
            if len(chunk) > room:
                self.truncated = True

    def value(self) -> bytes:
        return b"".join(self.chunks)


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes | None) -> None:
    if stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        if data:
            stdin.write(data)
            await stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        stdin.close()


async def _exited(pid: int) -> None:
    """Returns when process `pid` has exited (not waiting for its output pipes to close)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def check_quota(workspace: Workspace, limits: SandboxLimits) -> QuotaCheck:
    """The workspace against its quota; a check that fails for any reason counts as over
    quota (and is logged), so that no tree shape can switch the quota off."""
    try:
        return await asyncio.to_thread(workspace.check, limits)
    except Exception as exc:
        log.exception("sandbox.quota_check_failed", workspace=workspace.root.name, error=repr(exc))
        return QuotaCheck(
            mode="watcher", bytes=0, entries=0, over=True, full=False, detail=repr(exc)
        )


async def starting_fsize(workspace: Workspace, limits: SandboxLimits) -> int:
    """RLIMIT_FSIZE for a run: the file size limit, or what is left of the quota."""
    return (await check_quota(workspace, limits)).fsize(limits)


async def supervise(
    launch: Launch, *, workspace: Workspace, limits: SandboxLimits, stdin: bytes | None
) -> RunResult:
    started = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *launch.argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(launch.env),
            cwd=launch.cwd,
            pass_fds=tuple(launch.pass_fds),
            preexec_fn=launch.preexec,
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxUnavailableError(f"could not start {launch.argv[0]}: {exc}") from exc
    finally:
        for fd in launch.close_after_start:
            with contextlib.suppress(OSError):
                os.close(fd)
        if launch.cgroup is not None:
            launch.cgroup.close_fds()

    out, err = _Capped(limits.output_bytes), _Capped(limits.output_bytes)
    pumps = [
        asyncio.ensure_future(out.pump(proc.stdout)),
        asyncio.ensure_future(err.pump(proc.stderr)),
        asyncio.ensure_future(_feed(proc.stdin, stdin)),
    ]
    killed_for: list[LimitHit] = []

    def kill(reason: LimitHit | None) -> None:
        if reason is not None and not killed_for:
            killed_for.append(reason)
        # The process group, not proc.kill(): Popen.send_signal() polls first, which would reap
        # the child under asyncio's watcher thread. The group is the child's own session.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if launch.cgroup is not None:
            launch.cgroup.kill_all()

    cpu_limit = float(limits.cpu_seconds)

    def over_quota(check: QuotaCheck) -> bool:
        if check.over and not killed_for:
            log.info(
                "sandbox.over_quota",
                workspace=workspace.root.name,
                quota=check.mode,
                bytes=check.bytes,
                entries=check.entries,
                detail=check.detail,
            )
        return check.over

    async def watch() -> None:
        interval = WATCH_INTERVAL
        while True:
            await asyncio.sleep(interval)
            try:
                if launch.cgroup is not None:
                    used_cpu = launch.cgroup.cpu_seconds()
                    if used_cpu is not None and used_cpu >= cpu_limit:
                        kill("cpu_time")
                        return
                started_check = time.perf_counter()
                if over_quota(await check_quota(workspace, limits)):
                    kill("disk_quota")
                    return
                spent = time.perf_counter() - started_check
                interval = max(WATCH_INTERVAL, WATCH_BACKOFF * spent)
            except Exception:  # the watcher never stops quietly: no watcher, no run
                log.exception("sandbox.watcher_failed", workspace=workspace.root.name)
                kill("disk_quota")
                return

    watcher = asyncio.ensure_future(watch())
    try:
        try:
            await asyncio.wait_for(_exited(proc.pid), timeout=limits.wall_seconds)
        except TimeoutError:
            kill("wall_time")
        # The main process is done: whatever it left running goes with it (and with them the
        # ends of our pipes they hold, which asyncio waits for before it reports the exit).
        kill(None)
        await proc.wait()
        _done, pending = await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
    finally:
        watcher.cancel()
        for task in pumps:
            if not task.done():
                task.cancel()
        if proc.returncode is None:
            kill(None)
            with contextlib.suppress(Exception):
                await proc.wait()
    duration_ms = (time.perf_counter() - started) * 1000

    code = proc.returncode
    assert code is not None
    exit_code: int | None = code
    sig: int | None = None
    if code < 0:
        exit_code, sig = None, -code
    elif launch.signals_as_status and 128 < code <= 128 + 64:
        exit_code, sig = None, code - 128
    if killed_for:
        exit_code, sig = None, signal.SIGKILL

    stdout, stderr = out.value(), err.value()
    final = await check_quota(workspace, limits)
    limit = _verdict(
        killed_for=killed_for,
        signal_=sig,
        exit_code=exit_code,
        stderr=stderr,
        cgroup=launch.cgroup,
        limits=limits,
        fsize_bytes=launch.fsize_bytes,
        over_quota=over_quota(final),
        disk_full=final.full,
    )
    truncated = out.truncated or err.truncated
    if limit is None and truncated:
        limit = "output"
    return RunResult(
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
        duration_ms=duration_ms,
        limit_hit=limit,
        truncated=truncated,
        signal=sig,
    )


def _verdict(
    *,
    killed_for: list[LimitHit],
    signal_: int | None,
    exit_code: int | None,
    stderr: bytes,
    cgroup: RunCgroup | None,
    limits: SandboxLimits,
    fsize_bytes: int,
    over_quota: bool,
    disk_full: bool = False,
) -> LimitHit | None:
    if killed_for:
        return killed_for[0]
    # A full kernel-enforced workspace answers ENOSPC: a run that then failed, or said so, hit
    # the quota.
    enospc = b"No space left on device" in stderr[-4096:]
    if over_quota or (disk_full and (exit_code != 0 or enospc)):
        return "disk_quota"
    if cgroup is not None and cgroup.memory_hit():
        return "memory"
    # SIGXFSZ kills by default; programs that ignore it (Python does) get EFBIG instead.
    efbig = exit_code not in (0, None) and b"File too large" in stderr[-4096:]
    if signal_ == signal.SIGXFSZ or efbig:
        return "disk_quota" if fsize_bytes < limits.file_size_mb * MIB else "file_size"
    if signal_ == signal.SIGXCPU:
        return "cpu_time"
    if cgroup is not None:
        used = cgroup.cpu_seconds()
        if signal_ == signal.SIGKILL and used is not None and used >= limits.cpu_seconds:
            return "cpu_time"
        if cgroup.pids_hit():
            return "processes"
    if exit_code not in (0, None) and b"MemoryError" in stderr[-4096:]:
        return "memory"
    return None


def cgroup_path_names(cgroup: RunCgroup | None) -> dict[str, Path]:
    return dict(cgroup.paths) if cgroup is not None else {}
