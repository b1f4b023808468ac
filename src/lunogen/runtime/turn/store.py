"""Every write of a turn, and the only place a turn commits.

What is committed when, for a message whose lease a runner takes:

1. `start`, one transaction: take the thread's lease, check that the planned message is still
   its oldest pending one, and hold the credits for the first call. A message that cannot be
   answered (the agent stopped, an unpriced model) is ended here instead, in the same
   transaction.
2. Between the calls of a turn that runs tools, one transaction per call (`settle_step`): its
   usage row, the settlement of its hold and its record (`runtime.recorded`), so that a re-run
   after a crash reuses it; then one per further hold (`reserve`) or released hold
   (`release_hold`, the call failed).
3. `finish`, one transaction: the settlement and usage row of the last call, the staged tool
   writes, the log lines, the reply (or the failure; a reply the acceptable-use rules block is
   stored withheld), the screener's rows (`runtime.screening`), and the lease given back,
   reporting the thread's next pending message.

A turn of one call therefore commits twice. A worker that dies between 1 and 3 leaves an
active hold (it expires, charging nothing) and its recorded calls; the sweeper hands the thread
to another worker, which answers from the start and reuses the recorded calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.agent.lifecycle import set_status
from lunogen.agent.models import Agent
from lunogen.billing import caps as spend_caps
from lunogen.billing import credit_alerts, ledger, metering
from lunogen.billing.caps import CapReached
from lunogen.billing.ledger import IdempotencyConflict, InsufficientCredits
from lunogen.billing.models import CreditAccount
from lunogen.kit.effects import Effects
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.llm.models import UsageRecord
from lunogen.llm.provider import ModelCallError, ModelCallResult
from lunogen.llm.usage import Priced, chain_model, dearest_for, effective_cost
from lunogen.notification.service import notify
from lunogen.runlog.logs import log_event
from lunogen.runtime import approvals, recorded, replies, screening, service
from lunogen.runtime.models import Message, RecordedCall, Thread
from lunogen.runtime.screening import Screened, TurnScreening
from lunogen.runtime.service import Pending
from lunogen.runtime.turn.deps import CRASH_AFTER_FAILURES, MAX_ATTEMPTS, TurnDeps, TurnOutcome
from lunogen.runtime.turn.plan import Plan, Unanswerable
from lunogen.runtime.turn.work import Work

log = structlog.get_logger(__name__)

RETRY_BACKOFF = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2))
NANO = Decimal(1_000_000_000)

Event = tuple[str, dict[str, Any]]


@dataclass
class Finished:
    """How the turn ended, the event that tells a follower, and the thread's next pending
    message (seen as the lease was given back)."""

    outcome: str
    event: Event | None
    next: Pending | None = None


@dataclass
class Started:
    """`started` (the lease is ours: go on), `not_ours` (another worker holds it), `changed`
    (the planned message is no longer the one to answer: plan again) or `ended` (the message
    could not be answered and was ended: `finished`)."""

    state: str
    hold_id: str | None = None
    refused: InsufficientCredits | None = None
    capped: CapReached | None = None
    finished: Finished | None = None


def hold_amount(deps: TurnDeps, plan: Plan, prompt_tokens: int) -> int:
    """The most the next call can cost: `prompt_tokens` (a bound, see `context`) and the whole
    `max_output_tokens`, at the prices of the chain's dearest model."""
    return metering.worst_case_micro_credits(
        plan.chain_prices,
        prompt_tokens=prompt_tokens,
        max_output_tokens=plan.max_output_tokens,
        settings=deps.settings,
    )


async def start(
    deps: TurnDeps,
    target: Plan | Unanswerable,
    *,
    lease_token: str,
    lease: timedelta,
    hold: int | None,
) -> Started:
    async with deps.sessionmaker() as session:
        claimed = await session.execute(
            service.claim_statement(target.thread_id, lease_token, lease)
        )
        if not getattr(claimed, "rowcount", 0):
            await session.rollback()
            return Started("not_ours")
        pending = await service.oldest_pending(session, target.thread_id)
        if pending is None or pending.id != target.inbound_id or not pending.due:
            await session.rollback()
            return Started("changed")
        if isinstance(target, Unanswerable):
            finished = await _end_unanswerable(session, deps, target, lease_token=lease_token)
            return Started("ended", finished=finished)
        hold_id = None
        if hold is not None:
            try:
                hold_id = await _place_hold(session, deps, target, amount=hold, step=0)
            except InsufficientCredits as refused:  # the ledger wrote nothing: keep the lease
                await session.commit()
                return Started("started", refused=refused)
            except CapReached as capped:  # nothing held: keep the lease, answer with the cap reply
                await session.commit()
                return Started("started", capped=capped)
        await session.commit()
    return Started("started", hold_id=hold_id)


async def reserve(deps: TurnDeps, plan: Plan, *, prompt_tokens: int, step: int) -> str:
    """Hold the credits for the call of `step` (after the first), in a transaction of its own."""
    async with deps.sessionmaker() as session:
        hold_id = await _place_hold(
            session, deps, plan, amount=hold_amount(deps, plan, prompt_tokens), step=step
        )
        await session.commit()
    return hold_id


async def release_hold(deps: TurnDeps, hold_id: str, *, capped: bool = False) -> None:
    """End a hold whose call failed; `capped`: it was placed under a spend cap."""
    async with deps.sessionmaker() as session:
        await metering.release(session, hold_id=hold_id)
        if capped:
            await spend_caps.released(session, hold_id=hold_id)
        await session.commit()


async def settle_step(
    deps: TurnDeps,
    plan: Plan,
    *,
    step: int,
    fingerprint: str,
    hold_id: str,
    result: ModelCallResult,
) -> tuple[ModelCallResult, int]:
    """Store a call's usage row, its charge and its record in one transaction.

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
            await _caps_settled(session, deps, plan, hold_id=hold_id, charged=charged)
            await _after_charge(session, deps, plan)
            await session.commit()
    except (IntegrityError, IdempotencyConflict):
        await release_hold(deps, hold_id)
        async with deps.sessionmaker() as session:
            first = await session.get(RecordedCall, (plan.inbound_id, step))
        if first is None or first.fingerprint != fingerprint:
            raise
        log.info("model_call_raced", message_id=plan.inbound_id, step=step)
        return recorded.decode(deps.keyring, first.result), 0
    return result, charged


async def finish(deps: TurnDeps, plan: Plan, work: Work, *, lease_token: str) -> Finished:
    """Store what the turn produced and give the lease back, in one transaction."""
    outbound = _screen_reply(plan, work)  # before the transaction: no CPU work inside it
    async with deps.sessionmaker() as session:
        thread = (
            await session.execute(
                select(Thread).where(Thread.id == plan.thread_id).with_for_update()
            )
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
            _log_superseded(session, plan)
            await session.commit()
            superseded = True
        else:
            superseded = False
            outcome, event = await _store(session, deps, plan, work, thread, inbound, outbound)
            if outcome not in (TurnOutcome.RETRY_LATER, TurnOutcome.AWAITING_APPROVAL):
                # a turn that goes on later screens the message again
                ended = TurnScreening(
                    plan.agent_id,
                    plan.owner_id,
                    plan.inbound_id,
                    event[1].get("reply_id"),
                    plan.inbound_screened,
                    outbound,
                )
                await screening.recorded(
                    session, ended, settings=deps.settings, keyring=deps.keyring
                )
            await session.execute(service.release_statement(plan.thread_id, lease_token))
            following = await service.oldest_pending(session, plan.thread_id)
            await session.commit()
    if superseded:
        if work.final is not None:  # the call was made: charged once, and kept for the winner
            final = work.final
            await settle_step(
                deps,
                plan,
                step=final.step,
                fingerprint=final.fingerprint,
                hold_id=final.hold_id,
                result=final.result,
            )
        return Finished(TurnOutcome.SUPERSEDED, None)
    return Finished(outcome, event, following)


def _screen_reply(plan: Plan, work: Work) -> Screened | None:
    """The acceptable-use check of the reply the turn will store, if it will store one."""
    if work.refused is not None or work.failure is not None or work.error is not None:
        return None
    return plan.screen.check("outbound", work.reply_text or "")


async def _store(
    session: AsyncSession,
    deps: TurnDeps,
    plan: Plan,
    work: Work,
    thread: Thread,
    inbound: Message,
    outbound: Screened | None,
) -> tuple[str, Event]:
    if work.refused is not None:
        return await _refuse(session, deps, plan=plan, inbound=inbound, refused=work.refused)
    if work.failure is not None:
        return await _fail(session, deps, plan=plan, inbound=inbound, reason=work.failure)
    if work.error is not None:
        session.add(_failed_usage_row(plan, work.error))
        return await _retry_or_fail(session, deps, plan=plan, inbound=inbound, error=work.error)
    if work.awaiting is not None:
        return await _await_approval(session, deps, plan=plan, inbound=inbound, work=work)
    if work.capped is not None and plan.caps is not None:  # the reply is the cap's, unpaid
        await spend_caps.refused(
            session,
            deps.settings,
            deps.keyring,
            plan.caps,
            message_id=inbound.id,
            reached=work.capped,
        )
    if work.final is not None:
        final = work.final
        charged = await metering.settle(
            session,
            deps.settings,
            hold_id=final.hold_id,
            usage=_usage_row(plan, final.result),
            key=recorded.charge_key(plan.inbound_id, final.step, final.fingerprint),
        )
        await _caps_settled(session, deps, plan, hold_id=final.hold_id, charged=charged)
        await _after_charge(session, deps, plan)
    await work.writes.apply(session)
    if plan.recorded or work.recorded:
        await recorded.forget(session, inbound.id)
    reply_text = work.reply_text or ""
    if outbound is not None and outbound.blocked:  # kept only as the flag's evidence
        reply_text = screening.WITHHELD
        log_event(
            session,
            agent_id=plan.agent_id,
            event="moderation.withheld",
            level="warning",
            message=f"The reply to {inbound.id} was withheld under the acceptable-use policy",
            details={"message_id": inbound.id, "rules": [hit.rule for hit in outbound.hits]},
        )
    now = utcnow()
    reply = Message(
        id=new_id(),
        thread_id=thread.id,
        agent_id=plan.agent_id,
        seq=await service.next_seq(session, thread),
        role="assistant",
        content=deps.keyring.encrypt(reply_text),
        status="done",
        reply_to_id=inbound.id,
        completed_at=now,
    )
    session.add(reply)
    await replies.turn_ended(  # the channel sends it
        session, replies.TurnEnd(inbound.id, thread.id, plan.channel_key, answered=True)
    )
    inbound.status = "done"
    inbound.completed_at = now
    inbound.last_error = None
    log_event(
        session,
        agent_id=plan.agent_id,
        event="reply",
        message=f"Replied to {inbound.id} ({len(reply_text)} chars)",
        details={"message_id": inbound.id, "reply_id": reply.id, "thread_id": thread.id},
    )
    done = {
        "message_id": inbound.id,
        "reply_id": reply.id,
        "thread_id": thread.id,
        "text": reply_text,
    }
    return TurnOutcome.ANSWERED, ("done", done)


async def _await_approval(
    session: AsyncSession, deps: TurnDeps, *, plan: Plan, inbound: Message, work: Work
) -> tuple[str, Event]:
    """Stop the turn until the owner decides: its calls stay recorded (paid once), its staged
    writes are dropped (the resumed turn stages them again), the message stays pending and is
    due again when the requests expire; the owner is told once per request."""
    asked = work.awaiting or []
    created = await approvals.request(
        session,
        deps.keyring,
        agent_id=plan.agent_id,
        owner_id=plan.owner_id,
        message=inbound,
        asked=asked,
        expiry=plan.approval_expiry,
    )
    if created:
        tools = ", ".join(sorted({row.tool_name for row in created}))
        log_event(
            session,
            agent_id=plan.agent_id,
            event="approval.requested",
            level="warning",
            message=f"Message {inbound.id} waits for your approval of {tools}",
            details={"message_id": inbound.id, "approvals": [row.id for row in created]},
        )
        owner = await session.get(User, plan.owner_id)
        if owner is not None:
            name = plan.agent_name or "Your agent"
            await notify(
                session,
                user=owner,
                kind="approval.requested",
                title=f"{name} asks to run {tools}",
                body=f"{name} wants to run {tools} and waits for your decision. Approve or "
                f"deny it on the agent's Approvals page before "
                f"{created[0].expires_at:%Y-%m-%d %H:%M} UTC; after that it counts as denied.",
                dedupe_key=f"approval:{created[0].id}",
                settings=deps.settings,
                keyring=deps.keyring,
                agent_id=plan.agent_id,
            )
    waiting = {
        "message_id": inbound.id,
        "approvals": [row.id for row in created],
        "retry_at": inbound.next_attempt_at.isoformat() if inbound.next_attempt_at else None,
    }
    return TurnOutcome.AWAITING_APPROVAL, ("approval", waiting)


def _log_superseded(session: AsyncSession, plan: Plan) -> None:
    log_event(
        session,
        agent_id=plan.agent_id,
        event="turn.superseded",
        level="warning",
        message=f"Message {plan.inbound_id} was taken over by another worker; this answer "
        "is dropped",
        details={"message_id": plan.inbound_id},
    )


async def _unanswered(session: AsyncSession, plan: Plan, reason: str) -> None:
    end = replies.TurnEnd(
        plan.inbound_id, plan.thread_id, plan.channel_key, answered=False, reason=reason
    )
    await replies.turn_ended(session, end)


def _log_failed(session: AsyncSession, *, agent_id: str, message_id: str, reason: str) -> None:
    log_event(
        session,
        agent_id=agent_id,
        event="turn.failed",
        level="error",
        message=f"Message {message_id} could not be answered: {reason}",
        details={"message_id": message_id},
    )


async def _end_unanswerable(
    session: AsyncSession, deps: TurnDeps, target: Unanswerable, *, lease_token: str
) -> Finished:
    """End a message that cannot be answered (nothing was called), give the lease back. Commits."""
    inbound = await session.get(Message, target.inbound_id, with_for_update=True)
    assert inbound is not None
    inbound.status = target.status
    inbound.last_error = target.reason
    inbound.failure = target.failure
    inbound.completed_at = utcnow()
    await replies.turn_ended(
        session,
        replies.TurnEnd(
            inbound.id, target.thread_id, target.channel_key, answered=False, reason=target.reason
        ),
    )
    await recorded.forget(session, inbound.id)
    if target.screened is not None and target.agent_id and target.owner_id:
        blocked = TurnScreening(
            target.agent_id, target.owner_id, inbound.id, None, target.screened, None
        )
        await screening.recorded(session, blocked, settings=deps.settings, keyring=deps.keyring)
    if target.agent_id is not None:
        if target.status == "skipped":
            log_event(
                session,
                agent_id=target.agent_id,
                event="turn.skipped",
                level="warning",
                message=f"Message {inbound.id} not answered: {target.reason}",
            )
        else:
            _log_failed(
                session, agent_id=target.agent_id, message_id=inbound.id, reason=target.reason
            )
    await session.execute(service.release_statement(target.thread_id, lease_token))
    following = await service.oldest_pending(session, target.thread_id)
    await session.commit()
    outcome = TurnOutcome.SKIPPED if target.status == "skipped" else TurnOutcome.FAILED
    event = {"message_id": inbound.id, "error": target.reason, "retrying": False}
    return Finished(outcome, ("error", event), following)


async def _place_hold(
    session: AsyncSession, deps: TurnDeps, plan: Plan, *, amount: int, step: int
) -> str:
    """Hold the credits of a call; under a period cap, first check it (`CapReached`, nothing
    written) and count the hold against it, all under the account lock."""
    capped = plan.caps if plan.caps is not None and plan.caps.tracked else None
    periods = None if capped is None else await spend_caps.check(session, capped, amount=amount)
    hold_id = await metering.reserve(
        session,
        deps.settings,
        owner_id=plan.owner_id,
        amount=amount,
        key=f"hold:{plan.inbound_id}:{plan.run}:{step}",
        message_id=plan.inbound_id,
    )
    if capped is not None and periods is not None:
        await spend_caps.track(session, capped, periods, hold_id=hold_id, amount=amount)
    return hold_id


async def _caps_settled(
    session: AsyncSession, deps: TurnDeps, plan: Plan, *, hold_id: str, charged: int
) -> None:
    if plan.caps is not None and plan.caps.tracked:
        await spend_caps.settled(
            session, deps.settings, deps.keyring, plan.caps, hold_id=hold_id, charged=charged
        )


async def _retry_or_fail(
    session: AsyncSession, deps: TurnDeps, *, plan: Plan, inbound: Message, error: ModelCallError
) -> tuple[str, Event]:
    inbound.attempts += 1
    if error.retryable and inbound.attempts < MAX_ATTEMPTS:
        delay = RETRY_BACKOFF[min(inbound.attempts - 1, len(RETRY_BACKOFF) - 1)]
        inbound.next_attempt_at = utcnow() + delay
        inbound.last_error = str(error)[:2000]
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
    plan: Plan,
    inbound: Message,
    reason: str,
    model_gone: bool = False,
) -> tuple[str, Event]:
    inbound.status = "failed"
    inbound.last_error = reason[:2000]
    inbound.completed_at = utcnow()
    _log_failed(session, agent_id=plan.agent_id, message_id=inbound.id, reason=reason)
    await _unanswered(session, plan, reason)
    await recorded.forget(session, inbound.id)
    await session.flush()
    crash = await _crash_reason(session, plan=plan, reason=reason, model_gone=model_gone)
    if crash is not None:
        agent = await session.get(Agent, plan.agent_id, with_for_update=True)
        if agent is not None and agent.status == "running":
            effects = Effects(settings=deps.settings, keyring=deps.keyring)
            await set_status(session, agent=agent, status="error", effects=effects, reason=crash)
    return TurnOutcome.FAILED, (
        "error",
        {"message_id": inbound.id, "error": reason, "retrying": False},
    )


async def _crash_reason(
    session: AsyncSession, *, plan: Plan, reason: str, model_gone: bool
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


async def _after_charge(session: AsyncSession, deps: TurnDeps, plan: Plan) -> None:
    """Tell the owner when their credits run low; pause agents the balance can no longer run.

    Right after a settlement, in its transaction: the account is locked and held by the
    session as the settlement left it, so it is read from the session, not queried."""
    account = await session.get(CreditAccount, plan.owner_id)
    if account is None:
        return
    if ledger.claim_low_credit_alert_of(account):
        await credit_alerts.low_credits(session, deps.settings, deps.keyring, account=account)
    await _pause_if_out_of_credits(session, deps, plan, account.balance)


async def _pause_if_out_of_credits(
    session: AsyncSession, deps: TurnDeps, plan: Plan, balance: int
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
    plan: Plan,
    inbound: Message,
    refused: InsufficientCredits,
) -> tuple[str, Event]:
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
    await _unanswered(session, plan, str(refused))
    await recorded.forget(session, inbound.id)
    account = await ledger.get_account(session, plan.owner_id)
    await _pause_if_out_of_credits(session, deps, plan, account.balance if account else 0)
    event = {"message_id": inbound.id, "error": str(refused), "retrying": False, **failure}
    return TurnOutcome.FAILED, ("error", event)


def _usage_row(plan: Plan, result: ModelCallResult) -> UsageRecord:
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
        **_usage_of(plan),
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


def _failed_usage_row(plan: Plan, error: ModelCallError) -> UsageRecord:
    return UsageRecord(
        id=new_id(),
        **_usage_of(plan),
        requested_model=plan.model,
        answered_model=error.model,
        latency_ms=error.latency_ms or 0,
        outcome="error",
        error=str(error)[:2000],
    )


def _usage_of(plan: Plan) -> dict[str, str]:
    """The columns every usage row of the turn shares: whose call it was, for what message."""
    return {
        "owner_id": plan.owner_id,
        "agent_id": plan.agent_id,
        "thread_id": plan.thread_id,
        "message_id": plan.inbound_id,
    }
