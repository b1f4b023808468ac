"""What the support console may see of an account: its profile and its agents' status, always;
its conversations only while the owner's content grant (given on a ticket) is live.

Every read of another account writes an audit row in the request's transaction:
`support.account_viewed` for the profile, `support.content_viewed` for conversations (the list
of threads names the contacts, so it counts as content). The owner sees both in their security
log. Callers are behind the support-or-admin check.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account import service as accounts
from lunogen.account.models import User
from lunogen.admin import tickets
from lunogen.admin.models import ContentGrant, Ticket
from lunogen.agent.models import Agent
from lunogen.agent.service import visible_agents
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.errors import ForbiddenError, NotFoundError
from lunogen.runtime.models import Message, Thread

MAX_AGENTS = 200  # an account's agents shown at once (plans allow far fewer)


@dataclass(frozen=True)
class AccountView:
    user: User
    agents: list[Agent]
    open_tickets: int
    grant: ContentGrant | None


@dataclass(frozen=True)
class ThreadLine:
    thread: Thread
    agent_name: str
    messages: int


async def get_account(session: AsyncSession, *, user_id: str) -> User:
    """A live account by id, else `404 User not found`."""
    user = await session.get(User, user_id) if len(user_id) <= 36 else None
    if user is None or user.deleted_at is not None:
        raise NotFoundError(error="User not found")
    return user


def _audit(
    session: AsyncSession, principal: Principal, action: str, user: User, **extra: str
) -> None:
    target_type, target_id = extra.pop("target_type", "user"), extra.pop("target_id", user.id)
    audit.record(
        session,
        action=action,
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        subject_user_id=user.id,
        client=principal.client,
        target_type=target_type,
        target_id=target_id,
        details=extra or None,
    )


async def search_accounts(
    session: AsyncSession, *, principal: Principal, email: str, limit: int, offset: int
) -> tuple[list[User], int, str]:
    """Live accounts whose email contains `email` (all when empty), oldest first, the total, and
    the normalized text searched. Audited as `support.accounts_searched`."""
    search = accounts.normalize_email(email)
    found, total = await accounts.list_users(
        session, limit=limit, offset=offset, email=search or None
    )
    audit.record(
        session,
        action="support.accounts_searched",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        details={"email": search, "results": total},
    )
    return found, total, search


async def view_account(session: AsyncSession, *, principal: Principal, user_id: str) -> AccountView:
    """The account's profile, its agents (status only) and the live grant, audited as
    `support.account_viewed`. No message, instruction or memory text is read."""
    user = await get_account(session, user_id=user_id)
    rows = await session.execute(
        visible_agents(owner_id=user.id)
        .order_by(Agent.created_at.desc(), Agent.id.desc())
        .limit(MAX_AGENTS)
    )
    open_count = (
        await session.execute(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.user_id == user.id, Ticket.status != "closed")
        )
    ).scalar_one()
    _audit(session, principal, "support.account_viewed", user)
    return AccountView(
        user=user,
        agents=list(rows.scalars()),
        open_tickets=int(open_count),
        grant=await tickets.live_grant(session, user_id=user.id),
    )


async def _granted(session: AsyncSession, user: User) -> ContentGrant:
    grant = await tickets.live_grant(session, user_id=user.id)
    if grant is None:
        raise ForbiddenError(
            "The account's owner has not granted access to their conversations, or the grant "
            "has expired: they can grant it for a few hours on one of their tickets",
            error="Content access not granted",
        )
    return grant


async def content_threads(
    session: AsyncSession, *, principal: Principal, user_id: str, limit: int, offset: int
) -> tuple[list[ThreadLine], int, ContentGrant]:
    """The account's conversations (most recently active first) while a grant is live (403
    otherwise). Audited as `support.content_viewed`."""
    user = await get_account(session, user_id=user_id)
    grant = await _granted(session, user)
    base = select(Thread).where(Thread.owner_id == user.id)
    total = int(
        (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    )
    counts = (
        select(Message.thread_id, func.count().label("n"))
        .join(Thread, Thread.id == Message.thread_id)
        .where(Thread.owner_id == user.id)
        .group_by(Message.thread_id)
        .subquery()
    )
    rows = await session.execute(
        select(Thread, Agent.name, counts.c.n)
        .join(Agent, Agent.id == Thread.agent_id)
        .outerjoin(counts, counts.c.thread_id == Thread.id)
        .where(Thread.owner_id == user.id)
        .order_by(Thread.last_message_at.desc(), Thread.id)
        .limit(limit)
        .offset(offset)
    )
    lines = [ThreadLine(thread, name, n or 0) for thread, name, n in rows.all()]
    _audit(
        session,
        principal,
        "support.content_viewed",
        user,
        target_type="user",
        target_id=user.id,
        what="threads",
        ticket_id=grant.ticket_id,
    )
    return lines, total, grant


async def read_thread(
    session: AsyncSession,
    *,
    principal: Principal,
    user_id: str,
    thread_id: str,
    limit: int,
    offset: int,
) -> tuple[Thread, list[Message], int, ContentGrant]:
    """One of the account's conversations, oldest message first, while a grant is live (403
    otherwise; 404 for a thread that is not the account's). Audited as
    `support.content_viewed` naming the thread."""
    user = await get_account(session, user_id=user_id)
    grant = await _granted(session, user)
    thread = await session.get(Thread, thread_id) if len(thread_id) <= 36 else None
    if thread is None or thread.owner_id != user.id:
        raise NotFoundError(error="Thread not found")
    base = select(Message).where(Message.thread_id == thread.id)
    total = int(
        (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    )
    rows = await session.execute(base.order_by(Message.seq).limit(limit).offset(offset))
    _audit(
        session,
        principal,
        "support.content_viewed",
        user,
        target_type="thread",
        target_id=thread.id,
        what="thread",
        ticket_id=grant.ticket_id,
    )
    return thread, list(rows.scalars()), total, grant
