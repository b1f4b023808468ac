"""[retention-kept] After deletion we keep only the credit transactions and security records the
law requires, with your identity replaced by a random id.

After the purge of a paying person, the only rows that still stand for them carry one random
tombstone id: the credit ledger, usage, Stripe's events, the starter-grant claim and the audit
log, exactly the tables `docs/privacy.md` lists under "What stays"; the audit rows lost the IP
address and user agent. That nothing else refers to them and the ledger still adds up:
`tests/privacy/test_retention.py`.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy import inspect, select

from lunogen.account.models import User
from lunogen.audit.models import AuditEvent
from lunogen.db import Base
from lunogen.privacy import retention
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.account.support import rows
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.stripe import FakeStripe
from tests.helpers import PASSWORD, Api
from tests.privacy.promises import sentence
from tests.privacy.support import holder

TAG = "retention-kept"
SENTENCE = sentence(TAG)
DOCS = Path(__file__).parents[2] / "docs" / "privacy.md"
_TOMB = re.compile(r"tomb-[0-9a-f]{31}")


def _documented_kept_tables() -> set[str]:
    section = DOCS.read_text(encoding="utf-8").split("## What stays, and why", 1)[1]
    table = section.split("|---|---|---|", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return {name for line in lines for name in re.findall(r"`([a-z_]+)`", line.split("|")[1])}


async def _tables_holding(api: Api, needle: str) -> set[str]:
    found: set[str] = set()
    async with api.app.state.sessionmaker() as session:
        connection = await session.connection()
        present = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        for table in Base.metadata.sorted_tables:
            if table.name in present:
                for row in (await session.execute(select(table))).mappings():
                    if needle in json.dumps(dict(row), default=str):
                        found.add(table.name)
    return found


async def test_only_the_documented_records_stay_under_one_random_id(
    api: Api, openrouter: FakeOpenRouter, stripe_fake: FakeStripe
) -> None:
    person = await holder(api, openrouter, stripe_fake)
    deleted = await person.session.post(
        "/api/v1/account/delete", json={"password": PASSWORD}, headers=person.dev.person.headers
    )
    assert deleted.status_code == 200, deleted.text
    for _ in range(3):
        await enqueue.drain()
        await wait_idle()
    (user,) = await rows(api, select(User).where(User.id == person.id))
    assert user.deleted_at is not None
    audit_ids = [
        e.id
        for e in await rows(api, select(AuditEvent).where(AuditEvent.actor_user_id == person.id))
    ]
    report = await retention.purge_due(
        api.app.state.sessionmaker, api.app.state.settings, now=user.deleted_at + timedelta(days=30)
    )
    assert report.accounts == 1

    kept = await rows(api, select(AuditEvent).where(AuditEvent.id.in_(audit_ids)))
    stones = {e.actor_user_id for e in kept}
    assert len(kept) == len(audit_ids) and len(stones) == 1
    (stone,) = stones
    assert stone is not None and _TOMB.fullmatch(stone) and person.id not in stone
    assert all(e.ip is None and e.user_agent is None for e in kept)
    holding = await _tables_holding(api, stone)
    assert holding >= {"audit_events", "credit_accounts", "credit_entries", "usage_records"}
    assert holding <= _documented_kept_tables(), holding - _documented_kept_tables()
    assert set(retention.TOMBSTONED) | {"audit_events"} <= _documented_kept_tables()
