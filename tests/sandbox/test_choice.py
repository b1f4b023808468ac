"""Choosing a backend from LUNOGEN_SANDBOX."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lunogen.config import Settings
from lunogen.sandbox import LunoEdge, SandboxUnavailableError
from lunogen.sandbox import edge as edge_module


def _reasons(monkeypatch: pytest.MonkeyPatch, reasons: dict[str, str | None]) -> None:
    monkeypatch.setattr(edge_module, "backend_unavailable_reason", lambda name: reasons[name])


def test_auto_picks_the_first_available_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reasons(monkeypatch, {"bwrap": None, "gvisor": None, "process": None})
    edge = LunoEdge.from_settings(Settings(data_dir=tmp_path, sandbox="auto"))
    assert edge.backend_name == "bwrap"
    assert edge.isolated
    assert edge.workspaces_dir == tmp_path / "workspaces"


def test_auto_falls_back_to_gvisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _reasons(monkeypatch, {"bwrap": "bwrap missing", "gvisor": None, "process": None})
    assert edge_module.choose_backend("auto") == "gvisor"


def test_auto_never_picks_process_and_lists_each_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reasons(monkeypatch, {"bwrap": "no userns", "gvisor": "runsc missing", "process": None})
    with pytest.raises(SandboxUnavailableError) as caught:
        LunoEdge.from_settings(Settings(data_dir=tmp_path, sandbox="auto"))
    message = str(caught.value)
    assert "bwrap: no userns" in message and "gvisor: runsc missing" in message
    assert "LUNOGEN_SANDBOX=process" in message


def test_explicit_backend_that_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _reasons(monkeypatch, {"bwrap": None, "gvisor": "runsc missing", "process": None})
    with pytest.raises(SandboxUnavailableError, match=r"LUNOGEN_SANDBOX=gvisor.*runsc missing"):
        LunoEdge.from_settings(Settings(data_dir=tmp_path, sandbox="gvisor"))


def test_process_is_used_only_when_named_and_warns(tmp_path: Path) -> None:
    with capture_logs() as logs:
        edge = LunoEdge.from_settings(Settings(data_dir=tmp_path, sandbox="process"))
    assert edge.backend_name == "process"
    assert edge.isolated is False
    warnings = [e for e in logs if e["event"] == "sandbox.not_isolated"]
    assert warnings and warnings[0]["log_level"] == "warning"
    assert "NO isolation" in warnings[0]["message"]


def test_missing_module_is_reported_as_not_in_this_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        edge_module.BACKENDS, "gvisor", "lunogen.sandbox.does_not_exist:GVisorBackend"
    )
    reason = edge_module.backend_unavailable_reason("gvisor")
    assert reason is not None and reason.startswith("not installed in this build")


def test_env_allowlist() -> None:
    kept, dropped = edge_module.filter_env(
        {
            "LANG": "C",
            "SKILL_API_URL": "x",
            "PATH": "/evil",
            "HOME": "/root",
            "LD_PRELOAD": "x",
            "SKILL_BAD": "a\x00b",
            "PYTHONPATH": "/workspace/lib",
        }
    )
    assert kept == {"LANG": "C", "SKILL_API_URL": "x", "PYTHONPATH": "/workspace/lib"}
    assert sorted(dropped) == ["HOME", "LD_PRELOAD", "PATH", "SKILL_BAD"]
