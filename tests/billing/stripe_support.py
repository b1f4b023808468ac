"""Helpers for the billing API tests: Stripe settings, signed deliveries, the ledger's state."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from lunogen.billing.models import CreditAccount, CreditEntry
from lunogen.billing.models_stripe import StripeEvent
from lunogen.billing.verify import verify_all
from tests.fakes.stripe import FakeStripe, stripe_settings
from tests.helpers import Api

C = 1_000_000  # micro-credits per credit
STARTER = 100 * C


def billing_settings(fake: FakeStripe, **overrides: object) -> dict[str, object]:
    return stripe_settings(fake, stripe_pro_price_id=fake.pro_price_id, **overrides)


async def deliver(
    client: httpx.AsyncClient, fake: FakeStripe, event: dict[str, Any], **signing: Any
) -> httpx.Response:
    body, headers = fake.signed(event, **signing)
    return await client.post("/webhooks/stripe", content=body, headers=headers)


async def deliver_ok(
    client: httpx.AsyncClient, fake: FakeStripe, event: dict[str, Any]
) -> dict[str, Any]:
    response = await deliver(client, fake, event)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def balance(api: Api, user_id: str) -> int:
    async with api.app.state.sessionmaker() as session:
        account = await session.get(CreditAccount, user_id)
        return account.balance if account else 0


async def entries(api: Api, user_id: str, kind: str | None = None) -> list[CreditEntry]:
    async with api.app.state.sessionmaker() as session:
        query = select(CreditEntry).where(CreditEntry.account_id == user_id)
        if kind is not None:
            query = query.where(CreditEntry.kind == kind)
        return list((await session.execute(query.order_by(CreditEntry.id))).scalars())


async def stored_events(api: Api) -> list[StripeEvent]:
    async with api.app.state.sessionmaker() as session:
        rows = await session.execute(select(StripeEvent).order_by(StripeEvent.received_at))
        return list(rows.scalars())


async def verified(api: Api) -> None:
    """The ledger's invariants hold for every account."""
    async with api.app.state.sessionmaker() as session:
        problems = await verify_all(session)
    assert problems == [], [str(p) for p in problems]
