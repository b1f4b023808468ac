"""[collect-usage] For billing we keep every model call's tokens, model and cost, your credit
transactions, and the id Stripe gives your payments; we never see or store card numbers.

After a Stripe checkout and a model call: a usage row with the tokens, the model and the cost,
ledger entries for the purchase and the call, Stripe's ids in `stripe_events`; no table has a
column for card data, and no value anywhere looks like a
card number. Ledger rules: `tests/billing/`.
"""

from __future__ import annotations

import re

from sqlalchemy import inspect, select

from lunogen.billing.models import CreditEntry
from lunogen.billing.models_stripe import StripeEvent
from lunogen.db import Base
from lunogen.llm.models import UsageRecord
from tests.account.support import rows
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.stripe import FakeStripe
from tests.helpers import Api
from tests.privacy.promises import sentence
from tests.privacy.support import holder, rows_mentioning

TAG = "collect-usage"
SENTENCE = sentence(TAG)
_CARD_COLUMN = re.compile(r"card|pan\b|cvc|cvv|expiry|exp_month|exp_year|iban|account_number")


async def test_usage_ledger_and_stripe_ids_are_kept_and_no_card_data(
    api: Api, openrouter: FakeOpenRouter, stripe_fake: FakeStripe
) -> None:
    person = await holder(api, openrouter, stripe_fake)
    (usage,) = await rows(api, select(UsageRecord).where(UsageRecord.owner_id == person.id))
    assert (usage.prompt_tokens, usage.completion_tokens) == (120, 8)
    assert usage.requested_model and usage.cost_nano_usd is not None
    entries = await rows(api, select(CreditEntry))
    assert {e.kind for e in entries} >= {"usage"}, {e.kind for e in entries}
    events = await rows(api, select(StripeEvent).where(StripeEvent.account_id == person.id))
    assert events and all(e.id.startswith("evt_") for e in events)
    assert person.subscription_id in {e.object_id for e in events}

    async with api.app.state.sessionmaker() as session:
        connection = await session.connection()
        columns = await connection.run_sync(
            lambda c: [
                f"{table}.{column['name']}"
                for table in inspect(c).get_table_names()
                for column in inspect(c).get_columns(table)
            ]
        )
    assert [c for c in columns if _CARD_COLUMN.search(c.split(".", 1)[1])] == []
    assert {t.name for t in Base.metadata.sorted_tables} <= {c.split(".")[0] for c in columns}
    assert await rows_mentioning(api, ["4242424242424242", "4242 4242"]) == []
