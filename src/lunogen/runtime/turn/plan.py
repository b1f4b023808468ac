"""Step one of a turn: read what it needs, in one read-only transaction, writing nothing.

The plan is read before the thread's lease is taken (the start transaction takes it and checks
that the message read is still the thread's oldest pending one), so reading never holds
SQLite's write lock. The history comes from this process's window of the thread
(`runtime.window`): only exchanges newer than the window are read and decrypted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent import versions
from lunogen.agent.models import Agent
from lunogen.agent.workspace import sandbox_limits, uses_sandbox
from lunogen.billing import caps as spend_caps
from lunogen.billing import metering
from lunogen.db import read_sessionmaker
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.llm import catalog
from lunogen.llm.models import CatalogModel
from lunogen.runtime import approvals, context, recorded, screening, service
from lunogen.runtime.models import MemoryNote, Message, Thread
from lunogen.runtime.screening import Screen, Screened
from lunogen.runtime.service import Pending
from lunogen.runtime.turn.deps import TurnDeps
from lunogen.runtime.window import windows
from lunogen.sandbox.base import SandboxLimits
from lunogen.skill.service import SkillPackage, usable_skills
from lunogen.tool.mcp import tools as mcp_tools
from lunogen.tool.registry import ToolSpec, registry
from lunogen.tool.skill_loader import LOAD_SKILL

NOTES_PER_SCOPE = 50
DEFAULT_CONTEXT_LENGTH = 8192


@dataclass
class Plan:
    """What the model loop needs."""

    inbound_id: str
    thread_id: str
    channel_key: str
    contact: str | None
    agent_id: str
    owner_id: str
    model: str
    fallback_models: list[str]
    max_output_tokens: int
    instructions: str
    stream: bool
    messages: list[dict[str, Any]]
    prompt_bound: int  # `context.prompt_token_bound(messages)`, from the window's kept bounds
    tools: dict[str, ToolSpec | None]
    skills: dict[str, str]  # usable skills, name → id
    sandbox_limits: SandboxLimits | None
    chain_prices: list[CatalogModel]  # of `chain`, in its order
    cheapest_call: int  # micro-credits: the least any call of this agent is held for
    recorded: dict[int, tuple[str, str]]  # step → (fingerprint, result) of an earlier attempt
    run: str = field(default_factory=new_id)  # this attempt, for the keys of its credit holds
    screen: Screen = screening.NOTHING  # the acceptable-use rules, for the reply
    inbound_screened: Screened | None = None
    agent_name: str = ""
    # Tools whose calls wait for the owner's approval, the decisions taken on this message's
    # calls (by call id), and how long a new request waits (`runtime.approvals`).
    gated: frozenset[str] = frozenset()
    decisions: dict[str, approvals.Decision] = field(default_factory=dict)
    approval_expiry: timedelta = timedelta(minutes=approvals.DEFAULT_EXPIRY_MINUTES)
    caps: spend_caps.TurnCaps | None = None  # None: no spend cap applies (`billing.caps`)

    @property
    def chain(self) -> list[str]:
        """Every model that may answer: the agent's model, then its fallbacks."""
        return [self.model, *self.fallback_models]

    def tool_schemas(self) -> list[dict[str, Any]]:
        return [spec.openai_schema() for spec in self.tools.values() if spec is not None]


@dataclass
class Unanswerable:
    """A pending message the turn must end without calling the model."""

    inbound_id: str
    thread_id: str
    channel_key: str
    agent_id: str | None
    status: str  # `skipped` (the agent is not running) or `failed`
    reason: str
    failure: dict[str, Any] | None = None
    owner_id: str | None = None
    screened: Screened | None = None  # the inbound text's screening, when it blocked it


async def read(
    deps: TurnDeps, *, thread_id: str | None = None, inbound_id: str | None = None
) -> Plan | Unanswerable | None:
    """The plan for `inbound_id`, or for the oldest pending message of `thread_id` when it is
    due. None when there is nothing to answer (not pending, or not due yet)."""
    query = select(
        Message.id,
        Message.thread_id,
        Message.agent_id,
        Message.seq,
        Message.status,
        Message.stream,
        Message.content,
        Message.next_attempt_at,
        Message.turn_cap_micro,
        Message.source,
        Thread.contact,
        Thread.channel_key,
    ).join(Thread, Thread.id == Message.thread_id)
    if inbound_id is not None:
        query = query.where(Message.id == inbound_id)
    else:  # the thread's oldest pending message
        query = query.where(Message.thread_id == thread_id, Message.status == "pending")
        query = query.order_by(Message.seq).limit(1)
    async with read_sessionmaker(deps.sessionmaker)() as session:
        row = (await session.execute(query)).first()
        if row is None or row.status != "pending":
            return None
        if inbound_id is None and not Pending(row.id, row.next_attempt_at).due:
            return None
        return await _read(session, deps, row)


async def _read(session: AsyncSession, deps: TurnDeps, row: Any) -> Plan | Unanswerable:
    inbound_id: str = row.id
    agent = await session.get(Agent, row.agent_id)
    if agent is None or agent.deleted_at is not None or agent.status != "running":
        state = "deleted" if agent is None or agent.deleted_at else agent.status
        return Unanswerable(
            inbound_id=inbound_id,
            thread_id=row.thread_id,
            channel_key=row.channel_key,
            agent_id=None if agent is None else agent.id,
            status="skipped",
            reason=f"the agent was {state} before it could answer",
            failure={"code": "agent_not_running", "status": state},
        )
    agent = await versions.served(session, agent)  # its pinned version; no query when latest
    text = deps.keyring.decrypt(row.content)
    screen = await screening.screen(session, deps.settings)
    inbound = screen.check("inbound", text)
    if inbound.blocked:  # kept, never answered
        return Unanswerable(
            inbound_id=inbound_id,
            thread_id=row.thread_id,
            channel_key=row.channel_key,
            agent_id=agent.id,
            status="skipped",
            reason="the message was blocked under the acceptable-use policy",
            failure={
                "code": "moderation_blocked",
                "rules": [hit.rule for hit in inbound.hits if hit.action == "block"],
            },
            owner_id=agent.owner_id,
            screened=inbound,
        )
    chain = [agent.model, *agent.fallback_models]
    chain_prices = [await catalog.get_model(session, model_id) for model_id in chain]
    unpriced = [model_id for model_id, price in zip(chain, chain_prices, strict=True) if not price]
    if unpriced:  # deploy checks this; the catalog never drops a model, but a hold needs prices
        return Unanswerable(
            inbound_id=inbound_id,
            thread_id=row.thread_id,
            channel_key=row.channel_key,
            agent_id=agent.id,
            status="failed",
            reason=f"model {unpriced[0]!r} is not in the model catalog, so a call to it "
            "cannot be paid for",
        )
    prices = [price for price in chain_prices if price is not None]
    skills = (
        await usable_skills(session, owner_id=agent.owner_id, skill_ids=agent.skills)
        if agent.skills
        else []
    )
    tools: dict[str, ToolSpec | None] = {name: registry.get(name) for name in agent.tools}
    tools.update(await mcp_tools.for_turn(session, agent_id=agent.id))  # allowed remote tools
    if skills:
        tools[LOAD_SKILL.name] = LOAD_SKILL
    needs_sandbox = skills or uses_sandbox(agent.tools)
    messages, prompt_bound = await _context_messages(
        session,
        deps.keyring,
        agent=agent,
        thread_id=row.thread_id,
        contact=row.contact,
        inbound=(row.seq, context.as_said(text, source=row.source, contact=row.contact)),
        skills=skills,
        context_length=prices[0].context_length or DEFAULT_CONTEXT_LENGTH,
    )
    earlier = await recorded.load(session, inbound_id)
    gated = approvals.gated_tools(agent, tools)
    caps = await spend_caps.for_turn(
        session,
        agent_id=agent.id,
        agent_name=agent.name,
        owner_id=agent.owner_id,
        message_cap=row.turn_cap_micro,
    )
    return Plan(
        inbound_id=inbound_id,
        thread_id=row.thread_id,
        channel_key=row.channel_key,
        contact=row.contact,
        agent_id=agent.id,
        owner_id=agent.owner_id,
        model=agent.model,
        fallback_models=list(agent.fallback_models),
        max_output_tokens=agent.max_output_tokens,
        instructions=agent.instructions,
        stream=row.stream,
        messages=messages,
        prompt_bound=prompt_bound,
        tools=tools,
        skills={skill.name: skill.id for skill in skills},
        sandbox_limits=(
            await sandbox_limits(session, owner_id=agent.owner_id) if needs_sandbox else None
        ),
        chain_prices=prices,
        cheapest_call=metering.cheapest_call_micro_credits(
            prices, max_output_tokens=agent.max_output_tokens, settings=deps.settings
        ),
        recorded={step: (call.fingerprint, call.result) for step, call in earlier.items()},
        screen=screen,
        inbound_screened=inbound,
        agent_name=agent.name,
        gated=gated,
        decisions=await approvals.decisions(session, inbound_id) if gated else {},
        approval_expiry=approvals.expiry_of(agent),
        caps=caps,
    )


async def _notes(
    session: AsyncSession, keyring: KeyRing, *, agent_id: str, contact: str | None
) -> tuple[list[str], list[str]]:
    """The agent's newest notes and the contact's, each oldest first, in one query."""

    def newest(scope: Any) -> Any:
        return (
            select(MemoryNote.contact, MemoryNote.content, MemoryNote.created_at, MemoryNote.id)
            .where(MemoryNote.agent_id == agent_id, scope)
            .order_by(MemoryNote.created_at.desc(), MemoryNote.id.desc())
            .limit(NOTES_PER_SCOPE)
            .subquery()
        )

    scopes = [newest(MemoryNote.contact.is_(None))]
    if contact is not None:
        scopes.append(newest(MemoryNote.contact == contact))
    both = union_all(*(select(scope) for scope in scopes)).subquery()
    rows = await session.execute(select(both).order_by(both.c.created_at, both.c.id))
    agent_notes: list[str] = []
    contact_notes: list[str] = []
    for row in rows:
        (agent_notes if row.contact is None else contact_notes).append(keyring.decrypt(row.content))
    return agent_notes, contact_notes


async def _context_messages(
    session: AsyncSession,
    keyring: KeyRing,
    *,
    agent: Agent,
    thread_id: str,
    contact: str | None,
    inbound: tuple[int, str],
    skills: list[SkillPackage],
    context_length: int,
) -> tuple[list[dict[str, Any]], int]:
    """The messages of the first call, and the bound of their prompt tokens."""
    agent_notes, contact_notes = await _notes(session, keyring, agent_id=agent.id, contact=contact)
    system = context.system_prompt(
        instructions=agent.instructions,
        now=utcnow(),
        agent_notes=agent_notes,
        contact_notes=contact_notes,
        skills=[(skill.name, skill.description) for skill in skills],
    )
    seq, text = inbound
    known = windows.known(thread_id, before_seq=seq)
    newer: list[context.HistoryItem] = []
    last_seq = known.last_seq
    exchanges = await service.history(
        session, thread_id=thread_id, before_seq=seq, after_seq=known.last_seq
    )
    for question_seq, question, answer in exchanges:
        said = context.as_said(
            keyring.decrypt(question.content), source=question.source, contact=contact
        )
        newer.append(context.HistoryItem("user", said))
        if answer is not None:
            newer.append(context.HistoryItem("assistant", keyring.decrypt(answer.content)))
        last_seq = question_seq
    largest = context.history_budget(
        context_length=context_length, max_output_tokens=agent.max_output_tokens, system=""
    )
    items = [
        *windows.extend(thread_id, known, newer, last_seq=last_seq, keep_tokens=largest),
        context.HistoryItem("user", text),
    ]
    budget = context.history_budget(
        context_length=context_length, max_output_tokens=agent.max_output_tokens, system=system
    )
    window = context.trim_history(items, budget)
    return context.build_messages(system, window), context.prompt_bound_of(system, window)
