"""One agent turn: answer the oldest pending message of a thread, exactly once.

Model calls, tool runs, usage rows and the reply are committed together at the end of the
turn, so a worker that dies mid-turn leaves nothing behind: the lease expires, the sweeper
re-enqueues the thread, and another worker answers it from the start.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.logs import log_event
from lunogen.agent.models import Agent
from lunogen.channel import webhook
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.llm import catalog
from lunogen.llm.models import UsageRecord
from lunogen.llm.provider import ModelCallError, ModelCallResult, ModelClient
from lunogen.llm.usage import effective_cost
from lunogen.runtime import context
from lunogen.runtime.models import MemoryNote, Message, Thread
from lunogen.runtime.service import _next_seq, history
from lunogen.tool.registry import ToolContext, ToolSpec, registry

log = structlog.get_logger(__name__)

MAX_TOOL_STEPS = 8
TURN_TOKEN_CAP = 200_000
TOOL_RESULT_CHARS = 8_000
TOOL_TIMEOUT_SECONDS = 30
MAX_ATTEMPTS = 3
RETRY_BACKOFF = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2))
NANO = Decimal(1_000_000_000)


@dataclass
class TurnDeps:
    keyring: KeyRing
    model_client: ModelClient | None
    allow_private_urls: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _usage_row(
    *, agent: Agent, thread: Thread, inbound: Message, result: ModelCallResult, price: Any
) -> UsageRecord:
    cost = effective_cost(result.usage, price)
    return UsageRecord(
        id=new_id(),
        owner_id=agent.owner_id,
        agent_id=agent.id,
        thread_id=thread.id,
        message_id=inbound.id,
        requested_model=result.requested_model,
        answered_model=result.model,
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


def _failed_usage_row(
    *, agent: Agent, thread: Thread, inbound: Message, error: ModelCallError
) -> UsageRecord:
    return UsageRecord(
        id=new_id(),
        owner_id=agent.owner_id,
        agent_id=agent.id,
        thread_id=thread.id,
        message_id=inbound.id,
        requested_model=agent.model,
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
    session: AsyncSession, deps: TurnDeps, *, agent: Agent, thread: Thread, inbound: Message
) -> list[dict[str, Any]]:
    keyring = deps.keyring
    system = context.system_prompt(
        instructions=agent.instructions,
        now=utcnow(),
        agent_notes=await _notes(session, keyring, agent_id=agent.id, contact=None),
        contact_notes=await _notes(session, keyring, agent_id=agent.id, contact=thread.contact),
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
        result = await asyncio.wait_for(spec.run(ctx, args), timeout=TOOL_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"Error: the tool {name} took longer than {TOOL_TIMEOUT_SECONDS} s."
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


async def run_turn(session: AsyncSession, deps: TurnDeps, *, inbound: Message) -> str:
    """Answer `inbound` (a pending user message). Commits; returns a `TurnOutcome` value."""
    thread = await session.get(Thread, inbound.thread_id)
    agent = await session.get(Agent, inbound.agent_id)
    assert thread is not None
    if agent is None or agent.deleted_at is not None or agent.status != "running":
        state = "deleted" if agent is None or agent.deleted_at else agent.status
        inbound.status = "skipped"
        inbound.last_error = f"the agent was {state} before it could answer"
        inbound.completed_at = utcnow()
        if agent is not None:
            log_event(
                session,
                agent_id=agent.id,
                event="turn.skipped",
                level="warning",
                message=f"Message {inbound.id} not answered: the agent is {state}",
            )
        await session.commit()
        return TurnOutcome.SKIPPED

    messages = await _context_messages(session, deps, agent=agent, thread=thread, inbound=inbound)
    enabled = {name: registry.get(name) for name in agent.tools}
    tool_schemas = [spec.openai_schema() for spec in enabled.values() if spec is not None]
    tool_ctx = ToolContext(
        agent_id=agent.id,
        owner_id=agent.owner_id,
        contact=thread.contact,
        allow_private_urls=deps.allow_private_urls,
        session=session,
        keyring=deps.keyring,
    )
    price = await catalog.get_model(session, agent.model)
    usage_rows: list[UsageRecord] = []
    tokens_used = 0
    reply_text: str | None = None

    if deps.model_client is None:
        return await _fail(
            session,
            agent=agent,
            inbound=inbound,
            reason="no model provider is configured on this server",
        )
    # What tools write (memory notes) belongs to this attempt: a failed model call undoes it.
    attempt = await session.begin_nested()
    for step in range(MAX_TOOL_STEPS + 1):
        last_step = step == MAX_TOOL_STEPS or tokens_used >= TURN_TOKEN_CAP
        try:
            result = await deps.model_client.complete(
                model=agent.model,
                fallback_models=agent.fallback_models,
                messages=messages,
                tools=None if last_step or not tool_schemas else tool_schemas,
                max_tokens=agent.max_output_tokens,
            )
        except ModelCallError as error:
            await attempt.rollback()
            for row in usage_rows:  # calls that did answer were real, and are recorded
                session.add(row)
            session.add(_failed_usage_row(agent=agent, thread=thread, inbound=inbound, error=error))
            log_event(
                session,
                agent_id=agent.id,
                event="model.failed",
                level="error",
                message=str(error),
                details={"code": error.code, "status": error.status, "message_id": inbound.id},
            )
            return await _retry_or_fail(session, agent=agent, inbound=inbound, error=error)
        usage_rows.append(
            _usage_row(agent=agent, thread=thread, inbound=inbound, result=result, price=price)
        )
        tokens_used += result.usage.prompt_tokens + result.usage.completion_tokens
        log_event(
            session,
            agent_id=agent.id,
            event="model.call",
            message=f"{result.model}: {result.usage.prompt_tokens} in, "
            f"{result.usage.completion_tokens} out, {result.latency_ms} ms",
            details={
                "model": result.model,
                "generation_id": result.generation_id,
                "finish_reason": result.finish_reason,
                "tool_calls": [c.name for c in result.tool_calls],
            },
        )
        if not result.tool_calls or last_step:
            reply_text = result.text
            break
        messages.append(result.assistant_message())
        for call in result.tool_calls:
            output = await _run_tool(enabled.get(call.name), call.name, call.arguments, tool_ctx)
            failed = output.startswith("Error:")
            log_event(
                session,
                agent_id=agent.id,
                event="tool.call",
                level="warning" if failed else "info",
                message=f"{call.name}: {'failed' if failed else 'ok'}",
                details={"tool": call.name, "chars": len(output), "error": failed},
            )
            messages.append({"role": "tool", "tool_call_id": call.id, "content": output})

    await attempt.commit()
    for row in usage_rows:
        session.add(row)
    reply = Message(
        id=new_id(),
        thread_id=thread.id,
        agent_id=agent.id,
        seq=await _next_seq(session, thread),
        role="assistant",
        content=deps.keyring.encrypt(reply_text or ""),
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
        agent_id=agent.id,
        event="reply",
        message=f"Replied to {inbound.id} ({len(reply_text or '')} chars)",
        details={"message_id": inbound.id, "reply_id": reply.id, "thread_id": thread.id},
    )
    await session.commit()
    return TurnOutcome.ANSWERED


async def _retry_or_fail(
    session: AsyncSession, *, agent: Agent, inbound: Message, error: ModelCallError
) -> str:
    inbound.attempts += 1
    if error.retryable and inbound.attempts < MAX_ATTEMPTS:
        delay = RETRY_BACKOFF[min(inbound.attempts - 1, len(RETRY_BACKOFF) - 1)]
        inbound.next_attempt_at = utcnow() + delay
        inbound.last_error = str(error)[:2000]
        await session.commit()
        return TurnOutcome.RETRY_LATER
    return await _fail(session, agent=agent, inbound=inbound, reason=str(error))


async def _fail(session: AsyncSession, *, agent: Agent, inbound: Message, reason: str) -> str:
    inbound.status = "failed"
    inbound.last_error = reason[:2000]
    inbound.completed_at = utcnow()
    log_event(
        session,
        agent_id=agent.id,
        event="turn.failed",
        level="error",
        message=f"Message {inbound.id} could not be answered: {reason}",
        details={"message_id": inbound.id},
    )
    await session.commit()
    return TurnOutcome.FAILED
