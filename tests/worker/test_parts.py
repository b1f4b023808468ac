"""The worker imports no domain: the domains register their parts with it (resources, periodic
steps, sweeps, jobs) and the composition root imports them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from lunogen.config import Settings
from lunogen.kit.crypto import load_keyring
from lunogen.worker import maintenance, resources
from lunogen.worker.broker import JobRuntime, runtime
from lunogen.worker.process import JobProcess

WORKER_MAY_IMPORT = (
    "lunogen.worker",
    "lunogen.kit",
    "lunogen.db",
    "lunogen.config",
    "lunogen.errors",
)


def _in_a_fresh_process(code: str) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_the_worker_package_imports_no_domain() -> None:
    found = _in_a_fresh_process(
        "import json, sys\n"
        "import lunogen.worker.process, lunogen.worker.run, lunogen.worker.maintenance\n"
        "print(json.dumps({'modules': sorted(m for m in sys.modules if m.startswith('lunogen.'))}))"
    )
    outside = [m for m in found["modules"] if not m.startswith(WORKER_MAY_IMPORT)]
    assert outside == []


def test_the_composition_root_registers_every_part() -> None:
    """What `lunogen worker` has after importing `lunogen.composition` and nothing else."""
    found = _in_a_fresh_process(
        "import json\n"
        "import lunogen.composition\n"
        "from lunogen.worker import maintenance, queues, resources, sweeps\n"
        "from lunogen.worker.broker import async_shared_broker\n"
        "print(json.dumps({\n"
        "    'resources': [p.name for p in resources.providers()],\n"
        "    'periodic': sorted(p.name for p in maintenance.registered()),\n"
        "    'sweeps': sorted(sweeps._sweeps),\n"
        "    'queues': sorted(q.name for q in queues.registered_queues()),\n"
        "    'jobs': sorted(async_shared_broker.get_all_tasks()),\n"
        "}))"
    )
    assert sorted(found["resources"]) == [
        "log_bus",
        "model_client",
        "policy_versions",
        "scheduler",
        "turn_events",
    ]
    assert found["periodic"] == [
        "catalog_refresh",
        "cost_reconcile",
        "credit_hold_expiry",
        "data_export_expiry",
        "interrupted_deploys",
        "log_purge",
        "retention_purge",
        "schedules",
    ]
    assert found["sweeps"] == [
        "channel_deliveries",
        "channel_unregistrations",
        "data_exports",
        "email",
        "moderation_checks",
        "policy_notices",
        "stripe_cancellations",
        "threads",
    ]
    assert found["jobs"] == [
        "channel.deliver",
        "channel.unregister",
        "moderation.classify",
        "notification.send_email",
        "privacy.build_export",
        "privacy.cancel_subscription",
        "privacy.notify_policy_change",
        "runtime.run_thread",
        "sandbox.destroy_workspace",
    ]
    assert found["queues"] == [
        "channel_unregistrations",
        "data_exports",
        "deliveries",
        "emails",
        "moderation_checks",
        "stripe_cancellations",
        "turns",
    ]


async def test_resources_open_in_order_and_close_in_reverse(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "_providers", {})
    events: list[str] = []

    def provider(name: str) -> None:
        async def open_(_settings: Settings, _sessionmaker: object) -> str:
            events.append(f"open {name}")
            return f"{name} value"

        async def close(value: str) -> None:
            events.append(f"close {value}")

        resources.provide(resources.Resource[str](name), open=open_, close=close)

    provider("first")
    provider("second")
    keyring = load_keyring(settings.secret_keys, settings.data_dir)
    async with JobProcess(settings, keyring, grace_seconds=0.5).running() as rt:
        assert rt.get(resources.Resource[str]("second")) == "second value"
        assert runtime() is rt
        assert events == ["open first", "open second"]
    assert events[2:] == ["close second value", "close first value"]


def test_a_resource_nobody_provides_is_named_in_the_error(settings: Settings) -> None:
    rt = JobRuntime(settings, sessionmaker=None, keyring=None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="'model_client'"):
        rt.get(resources.Resource[object]("model_client"))


async def test_housekeeping_runs_each_step_when_due_and_survives_a_failing_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "_periodic", {})
    runs: list[str] = []

    @maintenance.register_periodic("failing", every=0.01)
    async def failing(_rt: JobRuntime) -> None:
        runs.append("failing")
        raise RuntimeError("boom")

    @maintenance.register_periodic("steady", every=0.01)
    async def steady(_rt: JobRuntime) -> None:
        runs.append("steady")

    @maintenance.register_periodic("later", every=3600, at_start=False)
    async def later(_rt: JobRuntime) -> None:
        runs.append("later")

    @maintenance.register_periodic("never", every=lambda s: s.catalog_refresh_hours * 3600)
    async def never(_rt: JobRuntime) -> None:  # catalog_refresh_hours is 0 in tests
        runs.append("never")

    rt = JobRuntime(settings, sessionmaker=None, keyring=None)  # type: ignore[arg-type]
    task = asyncio.create_task(maintenance.maintenance_forever(rt, tick_seconds=0.001))
    try:
        for _ in range(5000):  # until the steady step ran again after failures, no fixed wait
            if runs.count("steady") >= 3:
                break
            await asyncio.sleep(0.001)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert runs.count("steady") >= 3 and runs.count("failing") >= 2
    assert "later" not in runs and "never" not in runs
