"""`lunogen sandbox check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lunogen.sandbox import edge as edge_module
from lunogen.sandbox.check import AGENT
from tests.cli.conftest import Cli


def _cli(tmp_path: Path) -> Cli:
    return Cli(env={"LUNOGEN_DATA_DIR": str(tmp_path), "LUNOGEN_DATABASE_URL": None})


def test_check_reports_each_backend_and_the_choice(tmp_path: Path) -> None:
    reason = edge_module.backend_unavailable_reason("bwrap")
    result = _cli(tmp_path).run("sandbox", "check", LUNOGEN_SANDBOX="auto")
    out = result.output
    assert "bwrap" in out and "gvisor" in out and "process" in out
    assert "not isolated" in out  # the process backend says so
    if reason is None:
        assert result.exit_code == 0, out
        assert "/etc/shadow unreadable" in out
        assert "host network refused" in out
        assert "LUNOGEN_SANDBOX=auto uses:" in out
    else:
        assert "unavailable" in out


def test_check_exits_1_when_the_configured_backend_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = edge_module.backend_unavailable_reason

    def fake(name: str) -> str | None:
        return "runsc is not installed" if name == "gvisor" else real(name)

    monkeypatch.setattr(edge_module, "backend_unavailable_reason", fake)
    import lunogen.sandbox.check as check_module

    monkeypatch.setattr(check_module, "backend_unavailable_reason", fake)
    result = _cli(tmp_path).run("sandbox", "check", LUNOGEN_SANDBOX="gvisor")
    assert result.exit_code == 1
    assert "runsc is not installed" in result.output
    assert "LUNOGEN_SANDBOX=gvisor" in result.output


def test_check_with_process_says_not_isolated(tmp_path: Path) -> None:
    result = _cli(tmp_path).run("sandbox", "check", LUNOGEN_SANDBOX="process")
    assert result.exit_code == 0, result.output
    assert "uses: process" in result.output
    assert "not isolated" in result.output
    assert AGENT  # the self-test workspace is temporary: nothing left in the data dir
    assert not (tmp_path / "workspaces").exists()
