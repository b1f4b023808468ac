"""Kill -9 with 20 messages in flight, embedded shape: `lunogen serve` (SQLite, in-process jobs)
as a real process is SIGKILLed in the middle of its turns and started again on the same data
dir. Each message is answered once, each model call charged once, and the ledger verifies.

The scaled shape (a `lunogen worker` killed, PostgreSQL + Redis) is in tests/worker/test_scaled.py.
`bench/crash.py` measures the same with more rounds and reports the figures.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lunogen.config import Settings
from tests.agent.support import create_agent, new_dev
from tests.cli.conftest import cli_env
from tests.conftest import PG_URL
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api
from tests.runtime.crash_support import (
    CALLS_PER_TURN,
    IN_FLIGHT,
    assert_answered_once_and_charged_once,
    midway,
    outcome,
    script_turns,
    send_in_flight,
    settled,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    bool(PG_URL), reason="the embedded shape on SQLite; the PostgreSQL pass kills a worker"
)

LUNOGEN = str(Path(sys.executable).with_name("lunogen"))
LEASE_SECONDS = 2


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    """This process only prepares the account and reads the database: no sweeper of its own
    may answer the messages the server it starts was killed with."""
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`lunogen serve` on the test's data dir and database, started, killed, started again."""

    def __init__(self, settings: Settings, openrouter: FakeOpenRouter, log: Path) -> None:
        self.port = _free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGEN_")}
        self.env.update({k: v for k, v in cli_env(settings).items() if v is not None})
        self.env.update(
            {
                "LUNOGEN_PUBLIC_URL": settings.public_url,
                "LUNOGEN_LLM_BASE_URL": openrouter.base_url,
                "LUNOGEN_OPENROUTER_API_KEY": str(openrouter.api_key),
                "LUNOGEN_LLM_API_STYLE": "openrouter",
                "LUNOGEN_LLM_TIMEOUT_SECONDS": "60",
                "LUNOGEN_CATALOG_REFRESH_HOURS": "0",
                "LUNOGEN_TURN_LEASE_SECONDS": str(LEASE_SECONDS),
                "LUNOGEN_SWEEP_INTERVAL_SECONDS": "0.5",
                "LUNOGEN_SERVE_WORKERS": "1",
                "LUNOGEN_LOG_JSON": "true",
            }
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [LUNOGEN, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("lunogen serve did not become healthy within 60 s")

    def kill(self) -> None:
        """SIGKILL to the server and its process group: no handler runs, leases stay."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture
def server(settings: Settings, openrouter: FakeOpenRouter, tmp_path: Path) -> Iterator[Server]:
    running = Server(settings, openrouter, tmp_path / "serve.log")
    yield running
    running.stop()


async def test_serve_killed_with_20_messages_in_flight_answers_each_once_and_charges_once(
    api: Api, server: Server, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["remember"])
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    script_turns(openrouter)
    server.start()
    sessionmaker = api.app.state.sessionmaker

    headers = {"Authorization": str(dev.http.headers["authorization"])}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
        message_ids = await send_in_flight(http, agent["id"])

    half = IN_FLIGHT * CALLS_PER_TURN // 2

    async def half_the_calls_arrived() -> bool:
        return len(openrouter.chat_requests) >= half

    await wait_until(half_the_calls_arrived, 30, f"{half} model calls")
    server.kill()
    calls_at_kill = len(openrouter.chat_requests)
    assert calls_at_kill < IN_FLIGHT * CALLS_PER_TURN
    # The kill cut turns in the middle: paid calls recorded, their messages still pending.
    assert await midway(sessionmaker, message_ids) > 0

    server.start()  # its sweeper finds the threads once the dead server's leases run out

    async def all_settled() -> bool:
        return await settled(sessionmaker, message_ids)

    await wait_until(all_settled, 60, "every message to be answered after the restart")
    time.sleep(LEASE_SECONDS + 1)  # nothing more happens later: no second reply or charge
    assert_answered_once_and_charged_once(await outcome(sessionmaker, message_ids), message_ids)
    assert len(openrouter.chat_requests) > calls_at_kill

    server.stop()
    verify = subprocess.run(
        [LUNOGEN, "billing", "verify"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "accounts verified" in verify.stdout
