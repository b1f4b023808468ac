"""Sandbox fixtures: a LunoEdge per backend, laid out as in production (data dir, database
file, workspaces dir inside it). A backend that cannot run here is skipped with its reason, or
fails when LUNOGEN_TEST_REQUIRE_SANDBOXES names it (`tests/sandbox/support.py`). Every test's
workspaces are destroyed after it, and no mount may outlive the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from lunogen.sandbox import LunoEdge, RunResult, SandboxLimits, diskimage
from lunogen.sandbox.backends import backend_class
from lunogen.sandbox.edge import QuotaChoice, backend_unavailable_reason
from tests.sandbox.support import KERNEL_QUOTA, mounts_under, release_workspaces, unavailable

# The backends the escape suite runs against (the `process` backend isolates nothing).
ISOLATING_BACKENDS = ("bwrap", "gvisor")

LIMITS = SandboxLimits(
    cpu_seconds=10,
    memory_mb=128,
    processes=32,
    open_files=128,
    file_size_mb=4,
    workspace_mb=16,
    wall_seconds=15,
    output_bytes=16_000,
    max_files=2_000,
)
DB_SENTINEL = b"SQLite format 3\x00 lunogen-db-sentinel-7f3a"
KEY_SENTINEL = "lunogen-secret-key-sentinel-91c2"


@dataclass
class Sandbox:
    name: str
    edge: LunoEdge
    data_dir: Path
    database: Path
    secret_key: Path
    logs: list[dict[str, Any]] = field(default_factory=list)  # structlog events of the test

    def host_snapshot(self) -> dict[str, bytes]:
        """What must stay unchanged on the host, whatever the sandboxed code does."""
        return {
            "database": self.database.read_bytes(),
            "secret_key": self.secret_key.read_bytes(),
        }


def make_sandbox(name: str, tmp_path: Path, *, quota: QuotaChoice = "auto") -> Sandbox:
    """`quota`: "kernel" needs (or, when required, fails without) the loop-mounted image."""
    reason = backend_unavailable_reason(name)
    if reason is not None:
        unavailable(name, reason)
    if quota == "kernel" and (why := diskimage.unavailable_reason()) is not None:
        unavailable(KERNEL_QUOTA, why)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    database = data_dir / "lunogen.db"
    database.write_bytes(DB_SENTINEL)
    secret_key = data_dir / "secret.key"
    secret_key.write_text(KEY_SENTINEL)
    secret_key.chmod(0o600)
    edge = LunoEdge(
        workspaces_dir=data_dir / "workspaces", backend=backend_class(name)(), quota=quota
    )
    return Sandbox(
        name=name, edge=edge, data_dir=data_dir, database=database, secret_key=secret_key
    )


@pytest.fixture(autouse=True)
def no_mount_left_behind(tmp_path: Path) -> Iterator[None]:
    """Workspaces a test mounted are destroyed after it (images unmounted and deleted)."""
    yield
    release_workspaces(tmp_path)
    assert mounts_under(tmp_path) == []


@pytest.fixture(params=ISOLATING_BACKENDS)
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sandbox]:
    """Also checks, after the test, that every run was logged with what stopped it."""
    box = make_sandbox(request.param, tmp_path)
    results: list[RunResult] = []
    run = box.edge.run

    async def recorded(*args: Any, **kwargs: Any) -> RunResult:
        result = await run(*args, **kwargs)
        results.append(result)
        return result

    box.edge.run = recorded  # type: ignore[method-assign]
    with capture_logs() as logs:
        box.logs = logs
        yield box
    logged = [(e["limit_hit"], e["exit_code"]) for e in logs if e["event"] == "sandbox.run"]
    ran = [(r.limit_hit, r.exit_code) for r in results]
    assert sorted(logged, key=repr) == sorted(ran, key=repr)


@pytest.fixture
def process_sandbox(tmp_path: Path) -> Sandbox:
    return make_sandbox("process", tmp_path)


def running_with_marker(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (leftovers of a run)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found
