"""`lunogen sandbox check`: which backends work on this machine, each proven by a self-test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lunogen.sandbox import diskimage
from lunogen.sandbox.backends import BACKENDS, backend_class
from lunogen.sandbox.base import SandboxLimits, SandboxUnavailableError
from lunogen.sandbox.edge import (
    LunoEdge,
    QuotaChoice,
    backend_unavailable_reason,
    choose_backend,
)

SELF_TEST_LIMITS = SandboxLimits(
    cpu_seconds=10,
    memory_mb=256,
    processes=32,
    open_files=128,
    file_size_mb=5,
    workspace_mb=20,
    wall_seconds=20,
)
AGENT = "lunogen-self-test"
QUOTA_SLACK_BYTES = 1024 * 1024


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class BackendReport:
    name: str
    reason: str | None  # why it cannot run; None when it can
    isolated: bool = False
    checks: list[Check] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.reason is None

    @property
    def passed(self) -> bool:
        return self.available and all(check.ok for check in self.checks)


@dataclass
class CheckReport:
    backends: list[BackendReport]
    configured: str
    chosen: str | None  # what LUNOGEN_SANDBOX picks here
    choice_error: str | None

    @property
    def ok(self) -> bool:
        if self.chosen is None:
            return False
        return next(b for b in self.backends if b.name == self.chosen).passed


async def _self_test(name: str, quota: QuotaChoice) -> BackendReport:
    report = BackendReport(name=name, reason=backend_unavailable_reason(name))
    if report.reason is not None:
        return report
    with tempfile.TemporaryDirectory(prefix="lunogen-sandbox-check-") as tmp:
        root = Path(tmp)
        sentinel = root / "host-sentinel.txt"
        sentinel.write_text("host file\n")
        try:
            edge = LunoEdge(
                workspaces_dir=root / "workspaces", backend=backend_class(name)(), quota=quota
            )
        except (OSError, SandboxUnavailableError) as exc:
            report.reason = f"backend failed to start: {exc}"
            return report
        report.isolated = edge.isolated
        try:
            await edge.provision(AGENT, limits=SELF_TEST_LIMITS)
            result = await edge.run(
                AGENT,
                ["/bin/sh", "-c", "read line; echo got:$line"],
                limits=SELF_TEST_LIMITS,
                stdin=b"ping\n",
            )
            report.checks.append(
                Check(
                    "echo round trip",
                    result.exit_code == 0 and result.stdout.strip() == b"got:ping",
                    f"exit {result.exit_code}, {result.duration_ms:.0f} ms",
                )
            )
            report.checks.append(await _quota_check(edge))
            if not edge.isolated:
                report.checks.append(Check("isolation", True, "not isolated (skipped)"))
                return report
            report.checks.extend(await _isolation_checks(edge, sentinel))
        except SandboxUnavailableError as exc:
            report.checks.append(Check("run", False, str(exc)))
        finally:
            with contextlib.suppress(Exception):
                await edge.destroy(AGENT)
    return report


async def _quota_check(edge: LunoEdge) -> Check:
    """Six parallel writers of 5 MB against the 20 MB quota: stopped, and (kernel) held."""
    quota = SELF_TEST_LIMITS.workspace_mb * 1024 * 1024
    writers = "for i in 1 2 3 4 5 6; do head -c 5000000 /dev/zero > f$i & done; wait"
    result = await edge.run(AGENT, ["/bin/sh", "-c", writers], limits=SELF_TEST_LIMITS)
    used = await asyncio.to_thread(edge.workspace_usage, AGENT)
    stopped = result.limit_hit == "disk_quota"
    if edge.quota_mode == "kernel":
        held = f"{used / 1024 / 1024:.1f} of {SELF_TEST_LIMITS.workspace_mb} MB held"
        detail = f"kernel (an ext4 image per workspace); {held}"
        # ext4 may dip into its reserve for metadata near full: the bound is quota + 1 MiB.
        return Check("disk quota", stopped and used <= quota + QUOTA_SLACK_BYTES, detail)
    why = diskimage.unavailable_reason_for(edge.workspaces_dir) or "LUNOGEN_SANDBOX_QUOTA=watcher"
    return Check("disk quota", stopped, f"watcher (polled during runs; not kernel: {why})")


async def _isolation_checks(edge: LunoEdge, sentinel: Path) -> list[Check]:
    checks: list[Check] = []
    shadow = await edge.run(AGENT, ["cat", "/etc/shadow"], limits=SELF_TEST_LIMITS)
    checks.append(
        Check(
            "/etc/shadow unreadable",
            shadow.exit_code != 0 and b"root:" not in shadow.stdout,
            f"exit {shadow.exit_code}",
        )
    )

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "s.settimeout(3)\n"
        "try:\n"
        f"    s.connect(('127.0.0.1', {port}))\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print('refused', e)\n"
    )
    try:
        net = await edge.run(AGENT, ["python3", "-c", code], limits=SELF_TEST_LIMITS)
        accepted = False
        with contextlib.suppress(BlockingIOError):
            listener.accept()[0].close()
            accepted = True
    finally:
        listener.close()
    checks.append(
        Check(
            "host network refused",
            b"refused" in net.stdout and not accepted,
            (net.stdout or net.stderr).decode(errors="replace").strip()[:80],
        )
    )

    outside = await edge.run(
        AGENT,
        [
            "/bin/sh",
            "-c",
            f"echo pwned > {sentinel} ; echo pwned > /usr/lunogen-check ; "
            "echo pwned > /etc/lunogen-check ; echo pwned > /lunogen-check ; true",
        ],
        limits=SELF_TEST_LIMITS,
    )
    unchanged, leaked = await asyncio.to_thread(_host_untouched, sentinel)
    checks.append(
        Check(
            "writes outside the workspace refused",
            unchanged and not leaked and outside.stderr.count(b"\n") >= 3,
            "host file unchanged" if unchanged and not leaked else f"host changed: {leaked}",
        )
    )
    return checks


def _host_untouched(sentinel: Path) -> tuple[bool, list[str]]:
    leaked = [p for p in ("/usr/lunogen-check", "/etc/lunogen-check") if Path(p).exists()]
    return sentinel.read_text() == "host file\n", leaked


async def run_check(configured: str, quota: QuotaChoice = "auto") -> CheckReport:
    backends = [await _self_test(name, quota) for name in BACKENDS]
    chosen: str | None
    try:
        chosen = choose_backend(configured)
        error = None
    except SandboxUnavailableError as exc:
        chosen, error = None, str(exc)
    return CheckReport(backends=backends, configured=configured, chosen=chosen, choice_error=error)


def check(configured: str, quota: QuotaChoice = "auto") -> CheckReport:
    return asyncio.run(run_check(configured, quota))
