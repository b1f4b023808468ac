"""Helpers for the policy-version tests: the seeded versions, publishing, moving a version's
effective date into the past (time passing), reading rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from lunogen.privacy import policy
from lunogen.privacy.documents import bundled_text
from lunogen.privacy.models import PolicyVersion
from lunogen.privacy.policy import BUNDLED_EFFECTIVE_AT, BUNDLED_VERSION, KINDS
from lunogen.privacy.policy_notice import send_notices
from tests.helpers import Api, Signed

NEW_PRIVACY = """# Privacy Policy

A shorter policy for the tests.

## Cookies

- [cookies] We set only essential cookies, and now say so twice. <script>alert(1)</script>

## Changes to this policy

- [changes] We tell you before a material change takes effect.
"""


def tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).date().isoformat()


async def ensure_seeded(api: Api) -> None:
    """The rows migration 0014 seeds (the PostgreSQL test pass truncates every used table
    between tests, this one included)."""
    async with api.app.state.sessionmaker() as session:
        present = set((await session.execute(select(PolicyVersion.kind))).scalars())
        for kind in KINDS:
            if kind not in present:
                session.add(
                    PolicyVersion(
                        id=f"policy-{kind}-{BUNDLED_VERSION}",
                        kind=kind,
                        version=BUNDLED_VERSION,
                        effective_at=BUNDLED_EFFECTIVE_AT,
                        material=True,
                        text=bundled_text(kind).strip(),
                        summary="",
                        published_at=BUNDLED_EFFECTIVE_AT,
                        published_by=None,
                        notify_status="none",
                        notified=0,
                    )
                )
        await session.commit()
        await policy.refresh(session)


async def publish(
    admin: Signed, *, kind: str = "privacy", material: bool = True, **extra: Any
) -> Any:
    body = {"kind": kind, "effective": tomorrow(), "material": material, "text": NEW_PRIVACY}
    body.update(extra)
    return await admin.client.post("/api/v1/admin/policies", json=body, headers=admin.headers)


async def take_effect(api: Api, kind: str, version: str) -> None:
    """Time passes: the version's effective date is a minute ago (and the snapshot knows)."""
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(PolicyVersion)
            .where(PolicyVersion.kind == kind, PolicyVersion.version == version)
            .values(effective_at=datetime.now(UTC) - timedelta(minutes=1))
        )
        await session.commit()
        await policy.refresh(session)


async def version_row(api: Api, kind: str, version: str) -> PolicyVersion:
    async with api.app.state.sessionmaker() as session:
        row = (
            await session.execute(
                select(PolicyVersion).where(
                    PolicyVersion.kind == kind, PolicyVersion.version == version
                )
            )
        ).scalar_one()
        return row


async def run_notices(api: Api, kind: str, version: str) -> int | None:
    """Run the notice job's work now (as the worker would), for a version made `pending`."""
    row = await version_row(api, kind, version)
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(PolicyVersion)
            .where(PolicyVersion.id == row.id)
            .values(notify_next_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    app = api.app
    return await send_notices(app.state.sessionmaker, app.state.settings, app.state.keyring, row.id)


async def wait_notified(api: Api, kind: str, version: str, *, seconds: float = 10) -> PolicyVersion:
    """The version once its notices are all sent (by the app's in-process job)."""
    import asyncio

    from lunogen.worker import enqueue

    await enqueue.drain()
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        row = await version_row(api, kind, version)
        if row.notify_status == "done":
            return row
        assert asyncio.get_running_loop().time() < deadline, f"notices still {row.notify_status}"
        await asyncio.sleep(0.02)
