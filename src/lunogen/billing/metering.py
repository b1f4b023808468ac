"""Pay before the call: where a turn meets the credit ledger.

Before each model call of a turn (every tool step, streamed or not) the turn reserves the worst
case as a hold, in a short transaction of its own: a bound of the prompt's tokens that cannot
be too small (`runtime.context`: UTF-8 bytes of the messages and tool schemas sent) and the
agent's whole `max_output_tokens`, at the prices of whichever model of its chain (the model and
its fallbacks) would make the call dearest, with the markup. A balance that cannot cover it
refuses the call before it is made. After the call, one transaction writes the usage row and
settles the hold at the actual cost (the provider's reported cost, else catalog prices),
idempotently on the message and step (`runtime.recorded`); a cost above the hold (the
provider's price rose above the catalog's, or it bills extras the catalog does not list) is
still charged in full, and logged.
A failed call releases its hold. A worker that dies mid-call leaves an active hold, which
expires (`credit_hold_seconds`) and charges nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import Agent
from lunogen.billing import ledger
from lunogen.billing.units import micro_to_credits_str, nano_usd_to_micro_credits
from lunogen.config import Settings
from lunogen.llm import catalog
from lunogen.llm.models import CatalogModel, UsageRecord

NANO_PER_USD = Decimal(1_000_000_000)


def worst_case_micro_credits(
    models: Iterable[CatalogModel | None],
    *,
    prompt_tokens: int,
    max_output_tokens: int,
    settings: Settings,
) -> int:
    """The most a call can cost in micro-credits, across the models that may answer it."""
    worst = Decimal(0)
    for model in models:
        if model is None:
            continue
        cost = Decimal(model.prompt_price) * prompt_tokens
        cost += Decimal(model.completion_price) * max_output_tokens
        worst = max(worst, cost)
    nano = math.ceil(worst * NANO_PER_USD)
    return max(
        1,
        nano_usd_to_micro_credits(
            nano, usd_per_credit=settings.usd_per_credit, markup_percent=settings.markup_percent
        ),
    )


def cheapest_call_micro_credits(
    models: Iterable[CatalogModel | None], *, max_output_tokens: int, settings: Settings
) -> int:
    """The least a call of an agent with this model chain is ever held for: its reply budget
    alone (no prompt). A balance below it cannot pay for any message of that agent."""
    return worst_case_micro_credits(
        models, prompt_tokens=0, max_output_tokens=max_output_tokens, settings=settings
    )


async def agent_cheapest_call(session: AsyncSession, settings: Settings, agent: Agent) -> int:
    """`cheapest_call_micro_credits` of `agent` at today's catalog prices."""
    chain = dict.fromkeys([agent.model, *agent.fallback_models])
    return cheapest_call_micro_credits(
        [await catalog.get_model(session, model_id) for model_id in chain],
        max_output_tokens=agent.max_output_tokens,
        settings=settings,
    )


def charge_micro_credits(usage: UsageRecord, settings: Settings) -> int:
    """What a successful call costs its owner. An unknown cost charges 0 until reconciled."""
    return nano_usd_to_micro_credits(
        usage.cost_nano_usd or 0,
        usd_per_credit=settings.usd_per_credit,
        markup_percent=settings.markup_percent,
    )


async def reserve(
    session: AsyncSession,
    settings: Settings,
    *,
    owner_id: str,
    amount: int,
    key: str,
    message_id: str,
) -> str:
    """Hold `amount` micro-credits for one call; raises `ledger.InsufficientCredits` (also
    when the owner has no account yet: nothing to hold)."""
    hold = await ledger.place_hold(
        session,
        account_id=owner_id,
        amount=amount,
        key=key,
        reference=message_id,
        ttl=timedelta(seconds=settings.credit_hold_seconds),
        description=f"Up to {micro_to_credits_str(amount)} credits for a model call",
    )
    return hold.id


async def settle(
    session: AsyncSession, settings: Settings, *, hold_id: str, usage: UsageRecord, key: str
) -> int:
    """Store the usage row and charge it against its hold under the ledger key `key` (the
    turn derives it from the message and the step, so a re-run never charges a call twice).
    Returns the micro-credits charged."""
    session.add(usage)
    charged = charge_micro_credits(usage, settings)
    await ledger.settle_hold(
        session,
        hold_id=hold_id,
        actual=charged,
        key=key,
        reference=usage.id,
        description=f"{usage.answered_model or usage.requested_model}: "
        f"{usage.prompt_tokens} in, {usage.completion_tokens} out",
    )
    return charged


async def release(session: AsyncSession, *, hold_id: str) -> None:
    """The call the hold was for never produced a reply: charge nothing."""
    await ledger.release_hold(session, hold_id=hold_id, key=f"release:{hold_id}")
