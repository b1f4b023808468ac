"""The audit table refuses UPDATE and DELETE at the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from lunogen.audit.models import AuditEvent
from tests.account.support import rows
from tests.helpers import Api


async def _count(api: Api) -> int:
    async with api.app.state.sessionmaker() as session:
        return int((await session.execute(select(func.count(AuditEvent.id)))).scalar_one())


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'tampered'",
        "UPDATE audit_events SET details = '{\"x\": 1}' WHERE action = 'account.registered'",
        "UPDATE audit_events SET ip = '10.9.9.9' WHERE action = 'account.registered'",
        "DELETE FROM audit_events",
        "DELETE FROM audit_events WHERE action = 'auth.sign_in'",
    ],
)
async def test_raw_update_or_delete_fails(api: Api, statement: str) -> None:
    await api.sign_up()
    before = await rows(api, select(AuditEvent).order_by(AuditEvent.id))
    assert len(before) >= 3
    snapshot = [(e.id, e.action, e.details) for e in before]

    async with api.app.state.engine.connect() as conn:
        with pytest.raises(DBAPIError, match="append-only"):
            await conn.execute(text(statement))
        await conn.rollback()

    after = await rows(api, select(AuditEvent).order_by(AuditEvent.id))
    assert [(e.id, e.action, e.details) for e in after] == snapshot


async def test_orm_update_fails_too(api: Api) -> None:
    await api.sign_up()
    async with api.app.state.sessionmaker() as session:
        event = (await session.execute(select(AuditEvent).limit(1))).scalar_one()
        event.action = "tampered"
        with pytest.raises(DBAPIError, match="append-only"):
            await session.commit()
    assert "tampered" not in {e.action for e in await rows(api, select(AuditEvent))}


async def test_inserts_still_work(api: Api) -> None:
    before = await _count(api)
    await api.sign_up()
    assert await _count(api) > before
