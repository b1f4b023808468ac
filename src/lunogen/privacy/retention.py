"""The retention purge: deleted agents and accounts leave the database and the disk when due.

Which rows belong to an agent or a person is read from the table metadata, not listed by hand:
a column refers to a person when it is a foreign key to `users.id` or carries one of the names
in `USER_COLUMNS`, to an agent likewise (`AGENT_COLUMNS`), to an agent's channel likewise
(`CHANNEL_COLUMNS`). A new table with such a column is purged without a change here; a new
column ending in `_id` or `_by` that is none of these must be declared in `NOT_PERSONAL`
(`tests/privacy` fails until it is), so nothing is forgotten by accident.

What stays (see docs/privacy.md): the credit ledger (`credit_accounts`, `credit_entries`,
`credit_holds`), the model-call records it charges for (`usage_records`), Stripe's payment
events and the starter-grant claims (`stripe_events`, `starter_grant_claims`), and the audit
log. In those the person's id (and an agent's id) is replaced by a random tombstone id
(`tomb-...`, unrelated to the id it replaces and kept nowhere else), an audit row's IP address
and user agent are cleared, and their email address in an audit row's details is replaced too.
Every other row referring to them is deleted.

Each agent and each account is purged in its own transaction, claimed with `FOR UPDATE SKIP
LOCKED` on PostgreSQL (SQLite serialises writers), so two processes running the purge at once
never work on the same one; a purge cut short is found again by the next run.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import Column, Table, delete, func, inspect, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.account.models import User
from lunogen.agent.models import Agent, AgentChannel
from lunogen.audit.models import AuditEvent
from lunogen.billing.models import CreditAccount, CreditEntry, CreditHold, CreditPause
from lunogen.config import Settings
from lunogen.db import Base
from lunogen.kit.time import utcnow
from lunogen.notification.models import OutboundEmail
from lunogen.privacy.export import remove_exports_of
from lunogen.sandbox.workspace import Workspace, validate_agent_id

log = structlog.get_logger(__name__)

TOMBSTONE_PREFIX = "tomb-"
BATCH = 100  # agents and accounts per run of the step; the next run takes the rest

Kind = Literal["user", "agent", "channel"]
USER_COLUMNS = frozenset(
    {
        "user_id",
        "owner_id",
        "account_id",
        "actor_user_id",
        "subject_user_id",
        "created_by",
        "approved_by",
        "blocked_by",
        "decided_by",  # the owner who decided on a tool approval
        "taken_over_by",  # the owner answering a thread themselves
    }
)
AGENT_COLUMNS = frozenset({"agent_id"})
CHANNEL_COLUMNS = frozenset({"channel_id"})
# Columns named like references that never hold a person's, an agent's or a channel's id
# (rows they point to are purged through their own parents, or they are outside parties' ids).
NOT_PERSONAL = frozenset(
    {
        "actor_key_id",  # a revoked key's random id (its row is deleted)
        "created_by_key_id",  # an agent version's API key id (the row goes with its agent)
        "schedule_id",  # a schedule's run (it goes with its schedule's agent)
        "server_id",  # an MCP server of the agent (its call records go with the agent)
        "target_id",  # the audit log's target: tombstoned by `_tombstone_audit`
        "thread_id",
        "message_id",
        "ticket_id",  # a support ticket (it goes with its owner)
        "reply_to_id",  # a message id
        "tool_call_id",  # the model's id of a tool call
        "used_by",  # the contact that used a pairing code (the row goes with its channel)
        "delivery_id",
        "hold_id",
        "skill_id",
        "version_id",
        "generation_id",  # the model provider's id of one call
        "external_id",  # a channel provider's message id
        "object_id",  # Stripe's id of the event's object
        "subscription_id",  # Stripe's subscription id (its row is deleted with the account)
    }
)
# Kept rows: the identifier columns are tombstoned instead of the row being deleted. The
# credit tables and the audit log have their own code below.
TOMBSTONED = {
    "usage_records": frozenset({"owner_id", "agent_id"}),
    "stripe_events": frozenset({"account_id"}),
    "starter_grant_claims": frozenset({"user_id"}),
}
OWN_CODE = frozenset(
    {"audit_events", "credit_accounts", "credit_entries", "credit_holds", "credit_pauses"}
)
TARGETS: dict[Kind, str] = {"user": "users", "agent": "agents", "channel": "agent_channels"}
NAMES: dict[Kind, frozenset[str]] = {
    "user": USER_COLUMNS,
    "agent": AGENT_COLUMNS,
    "channel": CHANNEL_COLUMNS,
}


def new_tombstone() -> str:
    """A random id of the same length as a UUID, recognisable as a tombstone."""
    return TOMBSTONE_PREFIX + secrets.token_hex(16)[:31]


def column_kind(column: Column[Any]) -> Kind | None:
    """What `column` refers to: a person, an agent, an agent's channel, or nothing of theirs."""
    for kind, target in TARGETS.items():
        if any(fk.column.table.name == target for fk in column.foreign_keys):
            return kind
    for kind, names in NAMES.items():
        if column.name in names:
            return kind
    return None


def references(kind: Kind) -> list[tuple[Table, Column[Any]]]:
    """Every column that refers to a `kind`, children's tables first (safe delete order)."""
    found: list[tuple[Table, Column[Any]]] = []
    for table in reversed(Base.metadata.sorted_tables):
        if table.name == TARGETS[kind]:
            continue
        found.extend((table, c) for c in table.columns if column_kind(c) == kind)
    return found


def unclassified_columns() -> list[str]:
    """`table.column` of every column named like a reference that this module does not know."""
    loose: list[str] = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            named = column.name.endswith(("_id", "_by"))
            if named and column_kind(column) is None and column.name not in NOT_PERSONAL:
                loose.append(f"{table.name}.{column.name}")
    return loose


async def unknown_tables(session: AsyncSession) -> list[str]:
    """Tables in the database that this process's metadata does not describe: a purge then
    could not know whether they hold a person's rows, so it does not run."""
    connection = await session.connection()
    names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    known = {table.name for table in Base.metadata.sorted_tables} | {"alembic_version"}
    return sorted(names - known)


def _replaced(value: Any, replacements: dict[str, str]) -> Any:
    text = json.dumps(value)
    for old, new in replacements.items():
        text = text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1])
    return json.loads(text)


async def _tombstone_audit(
    session: AsyncSession, *, subject: str, tombstone: str, email: str | None = None
) -> None:
    """Replace `subject` (a person's or an agent's id) in the audit rows about it; for a
    person, also their email in details and the IP address and user agent they acted from."""
    rows = (
        await session.execute(
            select(AuditEvent).where(
                or_(
                    AuditEvent.actor_user_id == subject,
                    AuditEvent.subject_user_id == subject,
                    AuditEvent.target_id == subject,
                )
            )
        )
    ).scalars()
    replacements = {subject: tombstone}
    if email:
        replacements[email] = tombstone
    for row in rows:
        if row.actor_user_id == subject or row.subject_user_id == subject:
            row.ip = None
            row.user_agent = None
        if row.actor_user_id == subject:
            row.actor_user_id = tombstone
        if row.subject_user_id == subject:
            row.subject_user_id = tombstone
        if row.target_id == subject:
            row.target_id = tombstone
        details = _replaced(row.details, replacements)
        if details != row.details:
            row.details = details
    await session.flush()


async def _delete_or_tombstone(
    session: AsyncSession, kind: Kind, values: list[str], tombstone: str
) -> None:
    if not values:
        return
    for table, column in references(kind):
        if table.name in OWN_CODE:
            continue
        where = column.in_(values)
        if column.name in TOMBSTONED.get(table.name, ()):
            await session.execute(update(table).where(where).values({column.name: tombstone}))
        elif any(fk.ondelete == "SET NULL" for fk in column.foreign_keys):
            await session.execute(update(table).where(where).values({column.name: None}))
        elif table.name in TOMBSTONED:
            continue  # a kept table's other reference columns hold other parties' ids
        else:
            await session.execute(delete(table).where(where))


async def purge_agent_rows(session: AsyncSession, agent_id: str) -> None:
    """Delete the agent and every row that refers to it or its channels (kept tables get a
    tombstone id instead). Runs in the caller's transaction; the workspace is the caller's."""
    tombstone = new_tombstone()
    channel_ids = list(
        (
            await session.execute(select(AgentChannel.id).where(AgentChannel.agent_id == agent_id))
        ).scalars()
    )
    await _delete_or_tombstone(session, "channel", channel_ids, tombstone)
    await _delete_or_tombstone(session, "agent", [agent_id], tombstone)
    await session.execute(delete(CreditPause).where(CreditPause.agent_id == agent_id))
    await _tombstone_audit(session, subject=agent_id, tombstone=tombstone)
    await session.execute(delete(Agent).where(Agent.id == agent_id))


async def _move_ledger(session: AsyncSession, *, user_id: str, tombstone: str) -> None:
    """The person's credit account, its entries and holds, under the tombstone id: amounts,
    balances and times unchanged (balance == sum of entries still holds)."""
    account = await session.get(CreditAccount, user_id)
    if account is None:
        return
    session.add(
        CreditAccount(
            user_id=tombstone,
            balance=account.balance,
            held=account.held,
            low_credit_threshold=account.low_credit_threshold,
            low_alert_sent=account.low_alert_sent,
            created_at=account.created_at,
            updated_at=account.updated_at,
        )
    )
    await session.flush()
    await session.execute(
        update(CreditHold).where(CreditHold.account_id == user_id).values(account_id=tombstone)
    )
    await session.execute(
        update(CreditEntry)
        .where(CreditEntry.account_id == user_id)
        .values(
            account_id=tombstone,
            idempotency_key=func.replace(CreditEntry.idempotency_key, user_id, tombstone),
            reference=func.replace(CreditEntry.reference, user_id, tombstone),
            description=func.replace(CreditEntry.description, user_id, tombstone),
        )
    )
    await session.execute(
        update(CreditPause).where(CreditPause.account_id == user_id).values(account_id=tombstone)
    )
    await session.delete(account)
    await session.flush()


async def purge_user_rows(session: AsyncSession, user: User) -> list[str]:
    """Delete the person's account and every row referring to it, their agents included;
    kept rows get one tombstone id. Returns the purged agents' ids (the caller removes their
    workspaces once this commits)."""
    tombstone = new_tombstone()
    agent_ids = list(
        (await session.execute(select(Agent.id).where(Agent.owner_id == user.id))).scalars()
    )
    for agent_id in agent_ids:
        await purge_agent_rows(session, agent_id)
    await _move_ledger(session, user_id=user.id, tombstone=tombstone)
    await _tombstone_audit(session, subject=user.id, tombstone=tombstone, email=user.email)
    await _delete_or_tombstone(session, "user", [user.id], tombstone)
    await session.execute(delete(OutboundEmail).where(OutboundEmail.to_address == user.email))
    await session.execute(delete(User).where(User.id == user.id))
    return agent_ids


async def remove_workspace(settings: Settings, agent_id: str) -> None:
    root = settings.workspaces_dir / validate_agent_id(agent_id)
    await asyncio.to_thread(Workspace(root).destroy)


@dataclass
class PurgeReport:
    agents: int = 0
    accounts: int = 0
    skipped: str | None = None  # why nothing ran


def account_purge_cutoff(settings: Settings, now: datetime) -> datetime:
    """Accounts deleted at or before this are due."""
    return now - timedelta(days=settings.purge_after_days)


async def _next_due_agent(session: AsyncSession, now: datetime) -> Agent | None:
    query = (
        select(Agent)
        .where(Agent.purge_after.is_not(None), Agent.purge_after <= now)
        .order_by(Agent.purge_after)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def _next_due_user(session: AsyncSession, cutoff: datetime) -> User | None:
    query = (
        select(User)
        .where(User.deleted_at.is_not(None), User.deleted_at <= cutoff)
        .order_by(User.deleted_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def purge_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    now: datetime | None = None,
    batch: int = BATCH,
) -> PurgeReport:
    """Purge up to `batch` due agents and `batch` due accounts, one transaction each.

    `now` is the clock (tests move it). Idempotent: what is purged is gone, so a second run
    or a second process finds nothing more to do.
    """
    now = now or utcnow()
    report = PurgeReport()
    async with sessionmaker() as session:
        unknown = await unknown_tables(session)
    if unknown:
        report.skipped = f"tables unknown to this process: {', '.join(unknown)}"
        log.error("retention_purge_skipped", reason=report.skipped)
        return report
    for _ in range(batch):
        async with sessionmaker() as session:
            agent = await _next_due_agent(session, now)
            if agent is None:
                break
            agent_id = agent.id
            await purge_agent_rows(session, agent_id)
            await session.commit()
        await remove_workspace(settings, agent_id)
        report.agents += 1
        log.info("agent_purged", agent_id=agent_id)
    cutoff = account_purge_cutoff(settings, now)
    for _ in range(batch):
        async with sessionmaker() as session:
            user = await _next_due_user(session, cutoff)
            if user is None:
                break
            user_id = user.id
            agent_ids = await purge_user_rows(session, user)
            await session.commit()
        for agent_id in agent_ids:
            await remove_workspace(settings, agent_id)
        await remove_exports_of(settings, user_id)
        report.accounts += 1
        log.info("account_purged", agents=len(agent_ids))  # no id: it is gone on purpose
    return report
