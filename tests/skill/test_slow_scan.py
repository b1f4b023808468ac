"""The skill scan runs with no transaction open: while one tenant's package is being scanned,
another tenant's write completes (on SQLite a write transaction holds the one write lock)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping

import pytest

from lunogen.skill import service
from lunogen.skill.scanner import Finding
from tests.agent.support import new_dev
from tests.helpers import Api
from tests.skill.support import clean_package, create_skill

SLOW = "The scanner takes its time over this one."


@pytest.fixture
def slow_scan(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The scanner waits for `release` on packages whose body mentions SLOW; `started` tells
    that it is waiting. Other packages are scanned as usual."""
    started, release = threading.Event(), threading.Event()
    real = service.scan_package

    def scan(*, skill_md: str, files: Mapping[str, bytes]) -> list[Finding]:
        if SLOW in skill_md:
            started.set()
            release.wait(120)  # never forever, even when the test fails
        return real(skill_md=skill_md, files=files)

    monkeypatch.setattr(service, "scan_package", scan)
    yield started, release
    release.set()


@pytest.mark.parametrize("action", ["create", "update"])
async def test_another_tenants_write_completes_during_a_slow_scan(
    api: Api, slow_scan: tuple[threading.Event, threading.Event], action: str
) -> None:
    started, release = slow_scan
    owner, other = await new_dev(api), await new_dev(api)
    slow_package = clean_package(name="slow-skill", body=f"# Slow\n\n{SLOW}\n")
    if action == "create":
        slow = asyncio.create_task(owner.http.post("/api/v1/skills", json=slow_package))
    else:
        skill = await create_skill(owner, clean_package(name="slow-skill"))
        path = f"/api/v1/skills/{skill['id']}"
        slow = asyncio.create_task(owner.http.put(path, json=slow_package))
    assert await asyncio.to_thread(started.wait, 60), "the scan never started"

    write = asyncio.create_task(
        other.http.post("/api/v1/skills", json=clean_package(name="quick-skill"))
    )
    done, _ = await asyncio.wait({write, slow}, return_when=asyncio.FIRST_COMPLETED)
    assert write in done and not slow.done()  # finished while the scan was still waiting
    assert write.result().status_code == 201, write.result().text

    release.set()
    response = await slow
    assert response.status_code in (200, 201), response.text
    body = response.json()
    assert (body["name"], body["status"]) == ("slow-skill", "clean")
    assert body["version"] == (1 if action == "create" else 2)
