"""One agent turn: answer the oldest pending message of a thread, exactly once.

What is committed when: each completed model call, in one transaction right after it returns:
its usage row, the settlement of its credit hold and its record (`runtime.recorded`). Log lines,
staged tool writes and the reply are committed together at the end of the turn. A worker that
dies mid-turn leaves its paid calls recorded and nothing else: its lease expires, the sweeper
re-enqueues the thread, and another worker answers it from the start, reusing the recorded
calls (no new hold, call or charge) as long as it would send the same requests; tools run again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.agent.lifecycle import Effects, set_status
from lunogen.agent.logs import Level, log_event
from lunogen.agent.models import Agent
from lunogen.agent.workspace import edge_for, sandbox_limits, uses_sandbox
from lunogen.billing import credit_alerts, ledger, metering
from lunogen.billing.ledger import IdempotencyConflict, InsufficientCredits
from lunogen.channel import webhook
from lunogen.config import Settings
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.llm import catalog
from lunogen.llm.models import CatalogModel, UsageRecord
from lunogen.llm.provider import (
    ModelCallError,
    ModelCallResult,
    ModelClient,
    StreamDone,
    TextDelta,
)
from lunogen.llm.usage import Priced, chain_model, dearest_for, effective_cost
from lunogen.runtime import context, recorded
from lunogen.runtime.events import TurnEvents
from lunogen.runtime.models import MemoryNote, Message, RecordedCall, Thread
from lunogen.runtime.service import _next_seq, history
from lunogen.sandbox.base import SandboxLimits
from lunogen.skill.service import SkillPackage, usable_skills
from lunogen.tool.registry import StagedWrites, ToolContext, ToolSpec, registry
from lunogen.tool.skill_loader import LOAD_SKILL

log = structlog.get_logger(__name__)

MAX_TOOL_STEPS = 8
TURN_TOKEN_CAP = 200_000
TOOL_RESULT_CHARS = 8_000
MAX_ATTEMPTS = 3
CRASH_AFTER_FAILURES = 3
RETRY_BACKOFF = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2))
NANO = Decimal(1_000_000_000)


@dataclass
class TurnDeps:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    model_client: ModelClient | None
    events: TurnEvents | None = None

    @property
    def allow_private_urls(self) -> bool:
        return self.settings.allow_private_urls


def _usage_row(plan: _Plan, result: ModelCallResult) -> UsageRecord:
    """The call's usage, under the model of the agent's chain that answered.

    Providers may name a dated or provider-specific version (`openai/gpt-4o-mini-2024-07-18`):
    it is recorded as the chain's model it is a version of, and priced at that model's catalog
    prices when the provider reports no cost. A name that maps to no model of the chain is kept
    as the provider wrote it and priced at the chain's dearest (never below the hold's prices).
    """
    chain = plan.chain
    mapped = chain_model(result.model, chain)
    price: Priced | None
    if mapped is not None:
        answered = mapped
        price = plan.chain_prices[chain.index(mapped)]
    else:
        answered = result.model
        price = dearest_for(result.usage, plan.chain_prices)
    cost = effective_cost(result.usage, price)
    return UsageRecord(
        id=new_id(),
        owner_id=plan.owner_id,
        agent_id=plan.agent_id,
        thread_id=plan.thread_id,
        message_id=plan.inbound_id,
        requested_model=result.requested_model,
        answered_model=answered,
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        cached_tokens=result.usage.cached_tokens,
        reasoning_tokens=result.usage.reasoning_tokens,
        cost_nano_usd=None if cost is None else int((cost * NANO).to_integral_value()),
        cost_source=None
        if cost is None
        else ("provider" if result.usage.cost is not None else "catalog"),
        generation_id=result.generation_id,
        latency_ms=result.latency_ms,
        outcome="ok",
    )


def _failed_usage_row(plan: _Plan, error: ModelCallError) -> UsageRecord:
    return UsageRecord(
        id=new_id(),
        owner_id=plan.owner_id,
        agent_id=plan.agent_id,
        thread_id=plan.thread_id,
        message_id=plan.inbound_id,
        requested_model=plan.model,
        answered_model=error.model,
        latency_ms=error.latency_ms or 0,
        outcome="error",
        error=str(error)[:2000],
    )


async def _notes(
    session: AsyncSession, keyring: KeyRing, *, agent_id: str, contact: str | None
) -> list[str]:
    query = select(MemoryNote).where(MemoryNote.agent_id == agent_id)
    query = query.where(
        MemoryNote.contact.is_(None) if contact is None else MemoryNote.contact == contact
    )
    newest = query.order_by(MemoryNote.created_at.desc(), MemoryNote.id.desc()).limit(50)
    rows = list((await session.execute(newest)).scalars())
    return [keyring.decrypt(r.content) for r in reversed(rows)]


async def _context_messages(
    session: AsyncSession,
    deps: TurnDeps,
    *,
    agent: Agent,
    thread: Thread,
    inbound: Message,
    skills: Sequence[SkillPackage],
) -> list[dict[str, Any]]:
    keyring = deps.keyring
    system = context.system_prompt(
        instructions=agent.instructions,
        now=utcnow(),
        agent_notes=await _notes(session, keyring, agent_id=agent.id, contact=None),
        contact_notes=await _notes(session, keyring, agent_id=agent.id, contact=thread.contact),
        skills=[(skill.name, skill.description) for skill in skills],
    )
    items: list[context.HistoryItem] = []
    for question, answer in await history(session, thread_id=thread.id, before_seq=inbound.seq):
        items.append(context.HistoryItem("user", keyring.decrypt(question.content)))
        if answer is not None:
            items.append(context.HistoryItem("assistant", keyring.decrypt(answer.content)))
    items.append(context.HistoryItem("user", keyring.decrypt(inbound.content)))
    model = await catalog.get_model(session, agent.model)
    budget = context.history_budget(
        context_length=model.context_length if model else 8192,
        max_output_tokens=agent.max_output_tokens,
        system=system,
    )
    return context.build_messages(system, context.trim_history(items, budget))


async def _run_tool(spec: ToolSpec | None, name: str, raw_args: str, ctx: ToolContext) -> str:
    if spec is None:
        return f"Error: the tool {name!r} is not enabled for this agent."
    try:
        args = json.loads(raw_args or "{}")
        if not isinstance(args, dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as exc:
        return f"Error: invalid arguments for {name}: {exc}"
    try:
        result = await asyncio.wait_for(spec.run(ctx, args), timeout=spec.timeout_seconds)
    except TimeoutError:
        return f"Error: the tool {name} took longer than {spec.timeout_seconds:g} s."
    except Exception as exc:  # a tool failure goes to the model, never ends the turn
        log.warning("tool_failed", tool=name, error=repr(exc))
        return f"Error: the tool {name} failed: {type(exc).__name__}: {exc}"
    if len(result) > TOOL_RESULT_CHARS:
        result = result[:TOOL_RESULT_CHARS] + "\n[… truncated]"
    return result


class TurnOutcome:
    ANSWERED = "answered"
    RETRY_LATER = "retry_later"
    FAILED = "failed"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"  # our lease ran out and another worker took the thread


@dataclass
class _Plan:
    """What the model loop needs, read in one short transaction."""

    inbound_id: str
    thread_id: str
    contact: str | None
    agent_id: str
    owner_id: str
    model: str
    fallback_models: list[str]
    max_output_tokens: int
    instructions: str
    stream: bool
    messages: list[dict[str, Any]]
    tools: dict[str, ToolSpec | None]
    skills: dict[str, str]  # usable skills, name → id
    sandbox_limits: SandboxLimits | None
    chain_prices: list[CatalogModel]  # of `chain`, in its order
    cheapest_call: int  # micro-credits: the least any call of this agent is held for
    recorded: dict[int, tuple[str, str]]  # step → (fingerprint, result) of an earlier attempt
    run: str = field(default_factory=new_id)  # this attempt, for the keys of its credit holds

    @property
    def chain(self) -> list[str]:
        """Every model that may answer: the agent's model, then its fallbacks."""
        return [self.model, *self.fallback_models]


@dataclass
class _LogLine:
    event: str
    message: str
    level: Level = "info"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Work:
    """What the model loop produced; stored in one transaction at the end of the turn."""

    writes: StagedWrites
    log: list[_LogLine] = field(default_factory=list)
    reply_text: str | None = None
    error: ModelCallError | None = None
    failure: str | None = None  # a reason the turn cannot be answered at all
    refused: InsufficientCredits | None = None  # the owner's credits cannot cover the next call
    charged: int = 0  # micro-credits


async def run_turn(deps: TurnDeps, *, inbound_id: str, lease_token: str) -> str:
    """Answer the pending message `inbound_id` of a thread whose lease we hold.

    Three steps, so that no transaction stays open while the model thinks: read what the turn
    needs, run the model/tool loop with no transaction, then store everything (usage, log,
    staged tool writes, the reply) in one transaction that first checks the lease is still
    ours. Returns a `TurnOutcome` value.
    """
    async with deps.sessionmaker() as session:
        plan = await _prepare(session, deps, inbound_id=inbound_id)
    if isinstance(plan, str):
        return plan
    work = await _model_loop(deps, plan)
    async with deps.sessionmaker() as session:
        outcome, event = await _store(session, deps, plan, work, lease_token=lease_token)
    if deps.events is not None and event is not None:  # wakes whoever waits for the reply
        await deps.events.publish(plan.inbound_id, event[0], event[1])
    return outcome


async def _prepare(session: AsyncSession, deps: TurnDeps, *, inbound_id: str) -> _Plan | str:
    inbound = await session.get(Message, inbound_id)
    if inbound is None or inbound.status != "pending":
        return TurnOutcome.SKIPPED
    thread = await session.get(Thread, inbound.thread_id)
    agent = await session.get(Agent, inbound.agent_id)
    assert thread is not None
    if agent is None or agent.deleted_at is not None or agent.status != "running":
        state = "deleted" if agent is None or agent.deleted_at else agent.status
        inbound.status = "skipped"
        inbound.last_error = f"the agent was {state} before it could answer"
        inbound.failure = {"code": "agent_not_running", "status": state}
        inbound.completed_at = utcnow()
        await webhook.reply_failed(session, inbound_id=inbound.id, reason=inbound.last_error)
        await recorded.forget(session, inbound.id)
        if agent is not None:
            log_event(
                session,
                agent_id=agent.id,
                event="turn.skipped",
                level="warning",
                message=f"Message {inbound.id} not answered: the agent is {state}",
            )
        await session.commit()
        if deps.events is not None:
            await deps.events.publish(
                inbound.id,
                "error",
                {"message_id": inbound.id, "error": inbound.last_error, "retrying": False},
            )
        return TurnOutcome.SKIPPED
    skills = (
        await usable_skills(session, owner_id=agent.owner_id, skill_ids=agent.skills)
        if agent.skills
        else []
    )
    tools: dict[str, ToolSpec | None] = {name: registry.get(name) for name in agent.tools}
    if skills:
        tools[LOAD_SKILL.name] = LOAD_SKILL
    needs_sandbox = skills or uses_sandbox(agent.tools)
    chain = [agent.model, *agent.fallback_models]
    chain_prices = [await catalog.get_model(session, model_id) for model_id in chain]
    unpriced = [model_id for model_id, price in zip(chain, chain_prices, strict=True) if not price]
    if unpriced:  # deploy checks this; the catalog never drops a model, but a hold needs prices
        return await _fail_unprepared(
            session,
            deps,
            inbound=inbound,
            agent=agent,
            reason=f"model {unpriced[0]!r} is not in the model catalog, so a call to it "
            "cannot be paid for",
        )
    prices = [price for price in chain_prices if price is not None]
    return _Plan(
        inbound_id=inbound.id,
        thread_id=thread.id,
        contact=thread.contact,
        agent_id=agent.id,
        owner_id=agent.owner_id,
        model=agent.model,
        fallback_models=list(agent.fallback_models),
        max_output_tokens=agent.max_output_tokens,
        instructions=agent.instructions,
        stream=inbound.stream,
        messages=await _context_messages(
            session, deps, agent=agent, thread=thread, inbound=inbound, skills=skills
        ),
        tools=tools,
        skills={skill.name: skill.id for skill in skills},
        sandbox_limits=(
            await sandbox_limits(session, owner_id=agent.owner_id) if needs_sandbox else None
        ),
        chain_prices=prices,
        cheapest_call=metering.cheapest_call_micro_credits(
            prices, max_output_tokens=agent.max_output_tokens, settings=deps.settings
        ),
        recorded={
            step: (row.fingerprint, row.result)
            for step, row in (await recorded.load(session, inbound.id)).items()
        },
    )


async def _fail_unprepared(
    session: AsyncSession, deps: TurnDeps, *, inbound: Message, agent: Agent, reason: str
) -> str:
    """End a turn that cannot start (before any lease-checked store: nothing was called)."""
    inbound.status = "failed"
    inbound.last_error = reason
    inbound.completed_at = utcnow()
    await webhook.reply_failed(session, inbound_id=inbound.id, reason=reason)
    await recorded.forget(session, inbound.id)
    log_event(
        session,
        agent_id=agent.id,
        event="turn.failed",
        level="error",
        message=f"Message {inbound.id} could not be answered: {reason}",
        details={"message_id": inbound.id},
    )
    await session.commit()
    if deps.events is not None:
        await deps.events.publish(
            inbound.id, "error", {"message_id": inbound.id, "error": reason, "retrying": False}
        )
    return TurnOutcome.FAILED


async def _model_loop(deps: TurnDeps, plan: _Plan) -> _Work:
    work = _Work(writes=StagedWrites())
    if deps.model_client is None:
        work.failure = "no model provider is configured on this server"
        return work
    messages = list(plan.messages)
    tool_schemas = [spec.openai_schema() for spec in plan.tools.values() if spec is not None]
    # Bounds of the prompt's tokens for the holds, kept up to date as the turn's messages grow
    # (each message is measured once).
    prompt_bound = context.prompt_token_bound(messages)
    tools_bound = context.tools_token_bound(tool_schemas)
    edge, sandbox_problem = edge_for(deps.settings) if plan.sandbox_limits else (None, None)
    tool_ctx = ToolContext(
        agent_id=plan.agent_id,
        owner_id=plan.owner_id,
        contact=plan.contact,
        allow_private_urls=deps.allow_private_urls,
        sessionmaker=deps.sessionmaker,
        writes=work.writes,
        keyring=deps.keyring,
        edge=edge,
        sandbox_limits=plan.sandbox_limits,
        sandbox_problem=sandbox_problem,
        skills=plan.skills,
    )
    fingerprint = recorded.Fingerprint(
        chain=plan.chain,
        max_output_tokens=plan.max_output_tokens,
        instructions=plan.instructions,
        tools=tool_schemas,
    )
    tokens_used = 0
    for step in range(MAX_TOOL_STEPS + 1):
        last_step = step == MAX_TOOL_STEPS or tokens_used >= TURN_TOKEN_CAP
        tools = None if last_step or not tool_schemas else tool_schemas
        step_print = fingerprint.of_step(tools_offered=tools is not None)
        result = _replayed(deps, plan, step=step, fingerprint=step_print)
        replayed = result is not None
        if result is None:
            try:
                hold_id = await _reserve(
                    deps,
                    plan,
                    prompt_tokens=prompt_bound + (tools_bound if tools else 0),
                    step=step,
                )
            except InsufficientCredits as refused:
                work.refused = refused
                return work
            try:
                result = await _call_model(deps, plan, messages, tools)
            except ModelCallError as error:
                await _release(deps, hold_id)
                work.error = error
                work.log.append(
                    _LogLine(
                        "model.failed",
                        str(error),
                        "error",
                        {"code": error.code, "status": error.status, "message_id": plan.inbound_id},
                    )
                )
                return work
            result, charged = await _record_and_settle(
                deps, plan, step=step, fingerprint=step_print, hold_id=hold_id, result=result
            )
            work.charged += charged
        tokens_used += result.usage.prompt_tokens + result.usage.completion_tokens
        work.log.append(
            _LogLine(
                "model.call",
                f"{result.model}: {result.usage.prompt_tokens} in, "
                f"{result.usage.completion_tokens} out, {result.latency_ms} ms",
                details={
                    "model": result.model,
                    "generation_id": result.generation_id,
                    "finish_reason": result.finish_reason,
                    "tool_calls": [c.name for c in result.tool_calls],
                    "replayed": replayed,  # recorded by an attempt that died: not paid again
                },
            )
        )
        if not result.tool_calls or last_step:
            work.reply_text = result.text
            return work
        asked = result.assistant_message()
        messages.append(asked)
        fingerprint.feed(asked)
        prompt_bound += context.message_token_bound(asked)
        for call in result.tool_calls:
            await _publish(deps, plan, "tool", {"name": call.name, "status": "started"})
            output = await _run_tool(plan.tools.get(call.name), call.name, call.arguments, tool_ctx)
            failed = output.startswith("Error:")
            status = "failed" if failed else "ok"
            await _publish(deps, plan, "tool", {"name": call.name, "status": status})
            work.log.append(
                _LogLine(
                    "tool.call",
                    f"{call.name}: {status}",
                    "warning" if failed else "info",
                    {"tool": call.name, "chars": len(output), "error": failed},
                )
            )
            answer = {"role": "tool", "tool_call_id": call.id, "content": output}
            messages.append(answer)
            fingerprint.feed(answer)
            prompt_bound += context.message_token_bound(answer)
    raise AssertionError("unreachable: the last step never offers tools")


def _replayed(
    deps: TurnDeps, plan: _Plan, *, step: int, fingerprint: str
) -> ModelCallResult | None:
    """The call an earlier attempt made and paid for at this step, if it asked the same."""
    found = plan.recorded.get(step)
    if found is None or found[0] != fingerprint:
        return None
    return recorded.decode(deps.keyring, found[1])


async def _release(deps: TurnDeps, hold_id: str) -> None:
    async with deps.sessionmaker() as session:
        await metering.release(session, hold_id=hold_id)
        await session.commit()


async def _record_and_settle(
    deps: TurnDeps,
    plan: _Plan,
    *,
    step: int,
    fingerprint: str,
    hold_id: str,
    result: ModelCallResult,
) -> tuple[ModelCallResult, int]:
    """Store the call's usage row, its charge and its record in one transaction.

    Returns the result to go on with and the micro-credits charged. When another attempt at the
    message (a worker whose lease we took, still running) recorded this step first, its call is
    the one paid for and used; ours is dropped and its hold released.
    """
    usage = _usage_row(plan, result)
    try:
        async with deps.sessionmaker() as session:
            await recorded.record(
                session,
                deps.keyring,
                message_id=plan.inbound_id,
                step=step,
                fingerprint=fingerprint,
                result=result,
                replaces=step in plan.recorded,
            )
            charged = await metering.settle(
                session,
                deps.settings,
                hold_id=hold_id,
                usage=usage,
                key=recorded.charge_key(plan.inbound_id, step, fingerprint),
            )
            await _after_charge(session, deps, plan)
            await session.commit()
    except (IntegrityError, IdempotencyConflict):
        await _release(deps, hold_id)
        async with deps.sessionmaker() as session:
            first = await session.get(RecordedCall, (plan.inbound_id, step))
        if first is None or first.fingerprint != fingerprint:
            raise
        log.info("model_call_raced", message_id=plan.inbound_id, step=step)
        return recorded.decode(deps.keyring, first.result), 0
    return result, charged


async def _call_model(
    deps: TurnDeps,
    plan: _Plan,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
) -> ModelCallResult:
    assert deps.model_client is not None
    arguments: dict[str, Any] = {
        "model": plan.model,
        "fallback_models": plan.fallback_models,
        "messages": messages,
        "tools": tools,
        "max_tokens": plan.max_output_tokens,
    }
    if not (plan.stream and deps.events is not None):
        return await deps.model_client.complete(**arguments)
    async for event in deps.model_client.stream(**arguments):
        if isinstance(event, TextDelta) and event.text:
            await _publish(deps, plan, "delta", {"text": event.text})
        elif isinstance(event, StreamDone):
            return event.result
    raise ModelCallError("The stream ended without a result", code="bad_response")


async def _publish(deps: TurnDeps, plan: _Plan, event: str, data: dict[str, Any]) -> None:
    if plan.stream and deps.events is not None:
        await deps.events.publish(plan.inbound_id, event, data)


async def _store(
    session: AsyncSession, deps: TurnDeps, plan: _Plan, work: _Work, *, lease_token: str
) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """Write what the turn produced. Returns the outcome and the event to tell a follower."""
    thread = (
        await session.execute(select(Thread).where(Thread.id == plan.thread_id).with_for_update())
    ).scalar_one()
    inbound = await session.get(Message, plan.inbound_id, with_for_update=True)
    assert inbound is not None
    for line in work.log:
        log_event(
            session,
            agent_id=plan.agent_id,
            event=line.event,
            level=line.level,
            message=line.message,
            details=line.details,
        )
    if thread.lease_owner != lease_token or inbound.status != "pending":
        log_event(
            session,
            agent_id=plan.agent_id,
            event="turn.superseded",
            level="warning",
            message=f"Message {inbound.id} was taken over by another worker; this answer "
            "is dropped",
            details={"message_id": inbound.id},
        )
        await session.commit()
        return TurnOutcome.SUPERSEDED, None
    if work.refused is not None:
        return await _refuse(session, deps, plan=plan, inbound=inbound, refused=work.refused)
    if work.failure is not None:
        return await _fail(session, deps, plan=plan, inbound=inbound, reason=work.failure)
    if work.error is not None:
        session.add(_failed_usage_row(plan, work.error))
        return await _retry_or_fail(session, deps, plan=plan, inbound=inbound, error=work.error)
    await work.writes.apply(session)
    await recorded.forget(session, inbound.id)
    reply_text = work.reply_text or ""
    reply = Message(
        id=new_id(),
        thread_id=thread.id,
        agent_id=plan.agent_id,
        seq=await _next_seq(session, thread),
        role="assistant",
        content=deps.keyring.encrypt(reply_text),
        status="done",
        reply_to_id=inbound.id,
        completed_at=utcnow(),
    )
    session.add(reply)
    await webhook.reply_ready(session, inbound_id=inbound.id)  # callbacks waiting for it
    inbound.status = "done"
    inbound.completed_at = utcnow()
    inbound.last_error = None
    log_event(
        session,
        agent_id=plan.agent_id,
        event="reply",
        message=f"Replied to {inbound.id} ({len(reply_text)} chars)",
        details={"message_id": inbound.id, "reply_id": reply.id, "thread_id": thread.id},
    )
    await session.commit()
    done = {
        "message_id": inbound.id,
        "reply_id": reply.id,
        "thread_id": thread.id,
        "text": reply_text,
    }
    return TurnOutcome.ANSWERED, ("done", done)


async def _retry_or_fail(
    session: AsyncSession, deps: TurnDeps, *, plan: _Plan, inbound: Message, error: ModelCallError
) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    inbound.attempts += 1
    if error.retryable and inbound.attempts < MAX_ATTEMPTS:
        delay = RETRY_BACKOFF[min(inbound.attempts - 1, len(RETRY_BACKOFF) - 1)]
        inbound.next_attempt_at = utcnow() + delay
        inbound.last_error = str(error)[:2000]
        await session.commit()
        retry = {
            "message_id": inbound.id,
            "error": str(error),
            "retrying": True,
            "retry_at": inbound.next_attempt_at.isoformat(),
        }
        return TurnOutcome.RETRY_LATER, ("error", retry)
    return await _fail(
        session, deps, plan=plan, inbound=inbound, reason=str(error), model_gone=error.status == 404
    )


async def _fail(
    session: AsyncSession,
    deps: TurnDeps,
    *,
    plan: _Plan,
    inbound: Message,
    reason: str,
    model_gone: bool = False,
) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    inbound.status = "failed"
    inbound.last_error = reason[:2000]
    inbound.completed_at = utcnow()
    log_event(
        session,
        agent_id=plan.agent_id,
        event="turn.failed",
        level="error",
        message=f"Message {inbound.id} could not be answered: {reason}",
        details={"message_id": inbound.id},
    )
    await webhook.reply_failed(session, inbound_id=inbound.id, reason=reason)
    await recorded.forget(session, inbound.id)
    await session.flush()
    crash = await _crash_reason(session, plan=plan, reason=reason, model_gone=model_gone)
    if crash is not None:
        agent = await session.get(Agent, plan.agent_id, with_for_update=True)
        if agent is not None and agent.status == "running":
            effects = Effects(settings=deps.settings, keyring=deps.keyring)
            await set_status(session, agent=agent, status="error", effects=effects, reason=crash)
    await session.commit()
    return TurnOutcome.FAILED, (
        "error",
        {"message_id": inbound.id, "error": reason, "retrying": False},
    )


async def _crash_reason(
    session: AsyncSession, *, plan: _Plan, reason: str, model_gone: bool
) -> str | None:
    """Why the agent should stop taking messages after this failure, if it should.

    A model the provider no longer knows fails every turn; so does anything that has failed
    the agent's last `CRASH_AFTER_FAILURES` turns in a row. Either is worth the owner's attention
    (status `error`, notified) more than a stream of failed replies.
    """
    if model_gone:
        return f"the model provider does not know the model {plan.model!r} ({reason})"
    recent = (
        await session.execute(
            select(Message.status)
            .where(
                Message.agent_id == plan.agent_id,
                Message.role == "user",
                Message.status.in_(("done", "failed")),
            )
            .order_by(Message.completed_at.desc())
            .limit(CRASH_AFTER_FAILURES)
        )
    ).scalars()
    statuses = list(recent)
    if len(statuses) == CRASH_AFTER_FAILURES and all(s == "failed" for s in statuses):
        return f"the last {CRASH_AFTER_FAILURES} messages could not be answered; last: {reason}"
    return None


async def _reserve(deps: TurnDeps, plan: _Plan, *, prompt_tokens: int, step: int) -> str:
    """Hold the most the next call can cost: `prompt_tokens` (a bound, see `context`) and the
    whole `max_output_tokens`, at the prices of the chain's dearest model."""
    amount = metering.worst_case_micro_credits(
        plan.chain_prices,
        prompt_tokens=prompt_tokens,
        max_output_tokens=plan.max_output_tokens,
        settings=deps.settings,
    )
    async with deps.sessionmaker() as session:
        hold_id = await metering.reserve(
            session,
            deps.settings,
            owner_id=plan.owner_id,
            amount=amount,
            key=f"hold:{plan.inbound_id}:{plan.run}:{step}",
            message_id=plan.inbound_id,
        )
        await session.commit()
    return hold_id


async def _after_charge(session: AsyncSession, deps: TurnDeps, plan: _Plan) -> None:
    """Tell the owner when their credits run low; pause agents the balance can no longer run."""
    account = await ledger.get_account(session, plan.owner_id)
    if account is None:
        return
    if await ledger.claim_low_credit_alert(session, plan.owner_id):
        await credit_alerts.low_credits(session, deps.settings, deps.keyring, account=account)
    await _pause_if_out_of_credits(session, deps, plan, account.balance)


async def _pause_if_out_of_credits(
    session: AsyncSession, deps: TurnDeps, plan: _Plan, balance: int
) -> None:
    """Pause the owner's agents when the settled balance cannot pay for one more call of this
    agent. Credits held by calls in flight do not count: they come back when those end, so a
    burst of messages never pauses anyone (see `credit_alerts.pause_for_credits`)."""
    if balance < plan.cheapest_call:
        effects = Effects(settings=deps.settings, keyring=deps.keyring)
        await credit_alerts.pause_for_credits(session, effects, owner_id=plan.owner_id)


async def _refuse(
    session: AsyncSession,
    deps: TurnDeps,
    *,
    plan: _Plan,
    inbound: Message,
    refused: InsufficientCredits,
) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """No credits for the next call: end the turn unanswered (402). The agents pause only when
    the settled balance is too low, not when other calls in flight hold what is missing."""
    failure = {"code": "insufficient_credits", **refused.extra}
    inbound.status = "failed"
    inbound.last_error = str(refused)
    inbound.failure = failure
    inbound.completed_at = utcnow()
    log_event(
        session,
        agent_id=plan.agent_id,
        event="credits.refused",
        level="warning",
        message=f"Message {inbound.id} not answered: {refused}",
        details={"message_id": inbound.id, **refused.extra},
    )
    await webhook.reply_failed(session, inbound_id=inbound.id, reason=str(refused))
    await recorded.forget(session, inbound.id)
    account = await ledger.get_account(session, plan.owner_id)
    await _pause_if_out_of_credits(session, deps, plan, account.balance if account else 0)
    await session.commit()
    event = {"message_id": inbound.id, "error": str(refused), "retrying": False, **failure}
    return TurnOutcome.FAILED, ("error", event)
