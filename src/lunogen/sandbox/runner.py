"""Start one sandboxed process and watch it: output caps, wall time, quota, CPU, the verdict.

Shared by the bwrap, gVisor and process backends; what differs between them is the argv and what
the child does before exec (`Launch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

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


async def _read_end(
    pipe: IO[bytes] | None, transports: list[asyncio.BaseTransport]
) -> asyncio.StreamReader | None:
    """The child's output pipe as a stream on this loop (the transport owns and closes it)."""
    if pipe is None:
        return None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    transports.append(transport)
    return reader


async def _write_end(pipe: IO[bytes] | None, data: bytes | None) -> asyncio.WriteTransport | None:
    """Hands `data` to the child's stdin and closes it once written; a child that stops
    reading (or exits) just leaves the rest unwritten."""
    if pipe is None:
        return None
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
    with contextlib.suppress(OSError):
        if data:
            transport.write(data)
        transport.write_eof()
    return transport


async def _exited(pid: int) -> None:
    """Returns when process `pid` has exited (not waiting for its output pipes to close)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await _ready(fd)
    finally:
        os.close(fd)


async def _ready(fd: int) -> None:
    """Returns when `fd` (a pidfd: its process has exited) is readable."""
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


async def _all_exited(pidfds: list[int]) -> None:
    """Waits for every process of `pidfds` to exit, at most DRAIN_SECONDS; closes the pidfds."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            await asyncio.gather(*(_ready(fd) for fd in pidfds))
    except TimeoutError:
        pass  # the cgroup's removal kills again, until empty
    finally:
        for fd in pidfds:
            os.close(fd)


async def check_quota(workspace: Workspace, limits: SandboxLimits) -> QuotaCheck:
    """The workspace against its quota; a check that fails for any reason counts as over
    quota (and is logged), so that no tree shape can switch the quota off.

    In the kernel mode the check is one statfs of the workspace's own image, cheaper than the
    hop to a thread (twice per run); the watcher's walk runs in a thread."""
    try:
        if workspace.quota_mode == "kernel":
            return workspace.check(limits)
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
    """Runs `launch` to its end under `limits`.

    The process is started with `subprocess.Popen` (vfork when there is no preexec step, as
    asyncio does) and watched on the event loop itself: its exit through a pidfd, its pipes
    through loop transports. asyncio's own subprocess machinery would add a child-watcher thread
    per run (started, then woken at the exit): two thread hand-offs that cost 0.3-1 ms a run
    on a loaded 2-CPU host. The child is reaped only after its process group and cgroup were
    killed, so a reused pid can never be signalled.
    """
    started = time.perf_counter()
    try:
        # Synchronous, as in asyncio's own transport: it returns once the child has exec'd.
        proc = subprocess.Popen(  # noqa: S603, ASYNC220
            list(launch.argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
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
    killed_for: list[LimitHit] = []

    def kill_group() -> None:
        # The child's own session. Only while the child is not reaped: its pid (the group's
        # id) cannot have been reused yet.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def kill(reason: LimitHit | None) -> None:
        if reason is not None and not killed_for:
            killed_for.append(reason)
        kill_group()
        if launch.cgroup is not None:
            launch.cgroup.kill_all()

    async def end_leftovers() -> None:
        """Once the main process has exited, whatever it left running goes with it (and with
        them the ends of our pipes they hold); waits, on the loop, until they have left the
        cgroup (bwrap's own pid 1 is usually still exiting), so that it can be removed."""
        kill_group()
        if launch.cgroup is not None:
            await _all_exited(launch.cgroup.kill_once())

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

    transports: list[asyncio.BaseTransport] = []
    writer: asyncio.WriteTransport | None = None
    pumps: list[asyncio.Future[None]] = []
    watcher: asyncio.Future[None] | None = None
    try:
        pumps.append(asyncio.ensure_future(out.pump(await _read_end(proc.stdout, transports))))
        pumps.append(asyncio.ensure_future(err.pump(await _read_end(proc.stderr, transports))))
        writer = await _write_end(proc.stdin, stdin)
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait_for(_exited(proc.pid), timeout=limits.wall_seconds)
        except TimeoutError:
            kill("wall_time")
        await end_leftovers()
        await _exited(proc.pid)
        proc.wait()  # it has exited: this only reaps it
        _done, pending = await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
    finally:
        if watcher is not None:
            watcher.cancel()
        for task in pumps:
            if not task.done():
                task.cancel()
        if proc.returncode is None:
            kill(None)
            with contextlib.suppress(Exception):
                await _exited(proc.pid)
                proc.poll()
        # Closed at once: stdin data a child never read is dropped, not kept until a holder of
        # the pipe reads it. Each transport closes its pipe; a pipe not handed over is closed.
        if writer is not None:
            if writer.get_write_buffer_size():  # else it closed itself once written
                writer.abort()
            transports.append(writer)
        for transport in transports:
            if not transport.is_closing():
                transport.close()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None and not any(
                transport.get_extra_info("pipe") is pipe for transport in transports
            ):
                pipe.close()
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
