"""The owner's billing API (balance, settings, transactions, CSV) and the admins' credit
adjustments: fields, validation, paging, tenant isolation, audit."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from lunogen.billing import ledger
from tests.billing.stripe_support import STARTER, C, balance, billing_settings, entries, verified
from tests.fakes.stripe import FakeStripe
from tests.helpers import Api, Signed


@pytest.fixture
def settings_overrides(stripe_fake: FakeStripe) -> dict[str, object]:
    return billing_settings(stripe_fake)


async def _post(
    api: Api, person: Signed, kind: str, credits: int, key: str, text: str = ""
) -> None:
    async with api.app.state.sessionmaker() as session:
        await ledger.post(
            session,
            account_id=person.id,
            kind=kind,
            amount=credits * C,
            key=key,
            description=text,
        )
        await session.commit()


async def _admin(api: Api) -> Signed:
    admin = await api.sign_up()
    await api.make_admin(admin)
    return admin


async def _adjust(admin: Signed, user_id: str, body: dict[str, Any], **headers: str) -> Any:
    return await admin.client.post(
        f"/api/v1/admin/accounts/{user_id}/credits",
        json=body,
        headers={**admin.headers, **headers},
    )


# --- the overview and settings ----------------------------------------------------------------


async def test_the_overview_shows_credits_plan_and_what_can_be_bought(api: Api) -> None:
    person = await api.sign_up()
    reader = api.key_client(await api.create_key(person, ["agents:read"]))
    response = await reader.get("/api/v1/billing")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "balance": "100",
        "held": "0",
        "available": "100",
        "plan": "free",
        "low_credit_threshold": "10",
        "currency": "usd",
        "packs": [
            {"name": "starter", "credits": 500, "price_minor": 500},
            {"name": "standard", "credits": 2000, "price_minor": 2000},
            {"name": "large", "credits": 10000, "price_minor": 10000},
        ],
        "custom_credits_min": 500,
        "custom_credits_max": 100000,
        "pro_available": True,
    }
    assert (await api.new_client().get("/api/v1/billing")).status_code == 401


async def test_holds_show_as_held_and_not_available(api: Api) -> None:
    person = await api.sign_up()
    async with api.app.state.sessionmaker() as session:
        await ledger.place_hold(
            session,
            account_id=person.id,
            amount=2_500_000,
            key="hold-1",
            reference=None,
            ttl=timedelta(minutes=5),
        )
        await session.commit()
    body = (await person.client.get("/api/v1/billing")).json()
    assert (body["balance"], body["held"], body["available"]) == ("100", "2.5", "97.5")


async def test_the_low_credit_threshold_can_be_changed(api: Api) -> None:
    person = await api.sign_up()
    response = await person.client.patch(
        "/api/v1/billing/settings", json={"low_credit_threshold": "25.5"}, headers=person.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["low_credit_threshold"] == "25.5"
    assert (await person.client.get("/api/v1/billing")).json()["low_credit_threshold"] == "25.5"


@pytest.mark.parametrize(
    "body",
    [
        {"low_credit_threshold": -1},
        {"low_credit_threshold": "0.0000001"},
        {"low_credit_threshold": 1_000_001},
        {"low_credit_threshold": "NaN"},
        {"low_credit_threshold": "lots"},
        {},
        {"low_credit_threshold": 5, "email": "x@example.com"},
    ],
)
async def test_bad_thresholds_are_refused_naming_the_field(api: Api, body: dict[str, Any]) -> None:
    person = await api.sign_up()
    response = await person.client.patch(
        "/api/v1/billing/settings", json=body, headers=person.headers
    )
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["details"]]
    assert fields and set(fields) <= {"low_credit_threshold", "email"}
    assert (await person.client.get("/api/v1/billing")).json()["low_credit_threshold"] == "10"


async def test_changing_settings_needs_the_full_scope(api: Api) -> None:
    person = await api.sign_up()
    reader = api.key_client(await api.create_key(person, ["agents:read"]))
    response = await reader.patch("/api/v1/billing/settings", json={"low_credit_threshold": 1})
    assert response.status_code == 403


# --- transactions ---------------------------------------------------------------------------


async def test_transactions_newest_first_paged_by_before_id(api: Api) -> None:
    person = await api.sign_up()
    for n in range(1, 5):
        await _post(api, person, "topup", n, f"t{n}", f"top-up {n}")
    await _post(api, person, "adjustment", -2, "a1", "correction")
    first = (await person.client.get("/api/v1/billing/transactions?limit=2")).json()
    assert [(t["kind"], t["amount"]) for t in first["data"]] == [
        ("adjustment", "-2"),
        ("topup", "4"),
    ]
    assert first["data"][0]["balance_after"] == "108"
    assert first["data"][0]["description"] == "correction"
    assert first["next_before_id"] == first["data"][1]["id"]
    seen = [t["id"] for t in first["data"]]
    cursor = first["next_before_id"]
    while cursor is not None:
        page = (
            await person.client.get(f"/api/v1/billing/transactions?limit=2&before_id={cursor}")
        ).json()
        seen += [t["id"] for t in page["data"]]
        cursor = page["next_before_id"]
    assert len(seen) == 6 and seen == sorted(seen, reverse=True)  # the starter grant too
    only = (await person.client.get("/api/v1/billing/transactions?kind=topup")).json()
    assert [t["amount"] for t in only["data"]] == ["4", "3", "2", "1"]
    assert only["next_before_id"] is None


async def test_transactions_by_date(api: Api) -> None:
    person = await api.sign_up()
    await _post(api, person, "topup", 7, "t7")
    now = datetime.now(UTC)
    url = "/api/v1/billing/transactions"
    later = {"since": (now + timedelta(minutes=1)).isoformat()}
    assert (await person.client.get(url, params=later)).json()["data"] == []
    window = {
        "since": (now - timedelta(minutes=5)).isoformat(),
        "until": (now + timedelta(minutes=1)).isoformat(),
    }
    assert len((await person.client.get(url, params=window)).json()["data"]) == 2
    before = {"until": (now - timedelta(minutes=5)).isoformat()}
    assert (await person.client.get(url, params=before)).json()["data"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("kind=gift", "kind"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("before_id=0", "before_id"),
        ("since=yesterday", "since"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("format=xml", "format"),
    ],
)
async def test_bad_transaction_queries_are_422(api: Api, query: str, field: str) -> None:
    person = await api.sign_up()
    response = await person.client.get(f"/api/v1/billing/transactions?{query}")
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["details"]]


async def test_transactions_as_csv(api: Api) -> None:
    person = await api.sign_up()
    await _post(api, person, "topup", 3, "t3", '=HYPERLINK("http://evil")')
    by_query = await person.client.get("/api/v1/billing/transactions?format=csv&limit=1")
    by_accept = await person.client.get(
        "/api/v1/billing/transactions", headers={"Accept": "text/csv"}
    )
    for response in (by_query, by_accept):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
    assert by_query.text == by_accept.text
    rows = list(csv.reader(io.StringIO(by_query.text)))
    assert rows[0] == [
        "id",
        "created_at",
        "kind",
        "amount",
        "held_change",
        "balance_after",
        "reference",
        "description",
    ]
    assert [(r[2], r[3], r[5]) for r in rows[1:]] == [
        ("topup", "3", "103"),
        ("grant", "100", "100"),
    ]
    assert rows[1][7] == '\'=HYPERLINK("http://evil")'  # not a formula in a spreadsheet
    filtered = await person.client.get("/api/v1/billing/transactions?format=csv&kind=grant")
    assert len(list(csv.reader(io.StringIO(filtered.text)))) == 2


async def test_each_person_sees_only_their_own_billing(api: Api) -> None:
    alice, bob = await api.sign_up(), await api.sign_up()
    await _post(api, alice, "topup", 50, "alice-topup", "alice's")
    bob_view = (await bob.client.get("/api/v1/billing")).json()
    assert bob_view["balance"] == "100"
    bob_rows = (await bob.client.get("/api/v1/billing/transactions")).json()["data"]
    assert [t["kind"] for t in bob_rows] == ["grant"]
    bob_csv = (await bob.client.get("/api/v1/billing/transactions?format=csv")).text
    assert "alice's" not in bob_csv
    alice_ids = [
        t["id"] for t in (await alice.client.get("/api/v1/billing/transactions")).json()["data"]
    ]
    # Paging with another person's ids shows nothing of theirs either.
    paged = await bob.client.get(f"/api/v1/billing/transactions?before_id={max(alice_ids) + 1}")
    assert [t["id"] for t in paged.json()["data"]] == [t["id"] for t in bob_rows]
    await bob.client.patch(
        "/api/v1/billing/settings", json={"low_credit_threshold": 1}, headers=bob.headers
    )
    assert (await alice.client.get("/api/v1/billing")).json()["low_credit_threshold"] == "10"


# --- admin adjustments ----------------------------------------------------------------------


async def test_an_admin_adjusts_credits_with_a_reason_and_an_audit_row(api: Api) -> None:
    admin, person = await _admin(api), await api.sign_up()
    response = await _adjust(admin, person.id, {"credits": "12.5", "reason": "Support #42"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["user_id"], body["balance"], body["available"]) == (person.id, "112.5", "112.5")
    assert body["transaction"]["kind"] == "adjustment"
    assert body["transaction"]["amount"] == "12.5"
    assert body["transaction"]["description"] == "Support #42"
    taken = await _adjust(admin, person.id, {"credits": -20, "reason": "Chargeback"})
    assert taken.status_code == 201 and taken.json()["balance"] == "92.5"
    async with api.app.state.sessionmaker() as session:
        rows = list(
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.action == "billing.credits_adjusted")
                    .order_by(AuditEvent.created_at)
                )
            ).scalars()
        )
    assert [(r.actor_user_id, r.subject_user_id) for r in rows] == [(admin.id, person.id)] * 2
    assert [r.details for r in rows] == [
        {"credits": "12.5", "reason": "Support #42"},
        {"credits": "-20", "reason": "Chargeback"},
    ]
    assert rows[0].target_id == str(body["transaction"]["id"])
    await verified(api)


async def test_an_adjustment_retried_with_its_key_applies_once(api: Api) -> None:
    admin, person = await _admin(api), await api.sign_up()
    for _ in range(3):
        response = await _adjust(
            admin, person.id, {"credits": 5, "reason": "goodwill"}, **{"Idempotency-Key": "k1"}
        )
        assert response.status_code == 201
    assert await balance(api, person.id) == STARTER + 5 * C
    assert len(await entries(api, person.id, "adjustment")) == 1
    async with api.app.state.sessionmaker() as session:
        audits = await session.execute(
            select(AuditEvent.id).where(AuditEvent.action == "billing.credits_adjusted")
        )
        assert len(list(audits.scalars())) == 1
    other = await _adjust(
        admin, person.id, {"credits": 6, "reason": "goodwill"}, **{"Idempotency-Key": "k1"}
    )
    assert other.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"credits": 5}, "reason"),
        ({"credits": 5, "reason": "   "}, "reason"),
        ({"credits": 0, "reason": "nothing"}, "credits"),
        ({"credits": "1.0000001", "reason": "too fine"}, "credits"),
        ({"credits": "2000000000", "reason": "too much"}, "credits"),
        ({"reason": "no amount"}, "credits"),
    ],
)
async def test_bad_adjustments_are_422(api: Api, body: dict[str, Any], field: str) -> None:
    admin, person = await _admin(api), await api.sign_up()
    response = await _adjust(admin, person.id, body)
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["details"]]
    assert await balance(api, person.id) == STARTER


async def test_adjustments_are_for_admins_and_known_users(api: Api) -> None:
    admin, person = await _admin(api), await api.sign_up()
    denied = await _adjust(person, person.id, {"credits": 1000, "reason": "free money"})
    assert denied.status_code == 403
    missing = await _adjust(admin, "no-such-user", {"credits": 1, "reason": "who?"})
    assert missing.status_code == 404
    assert await balance(api, person.id) == STARTER
