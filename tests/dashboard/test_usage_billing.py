"""The Usage and Billing pages over HTTP, as a browser would use them: charts and tables with the
figures of known calls, the same figures as CSV, date ranges that are refused on the page, the
ledger's transactions paged and as CSV, the low-credit alert form, and buying credits or Pro
through the fake Stripe (and a page that says so when this server sells nothing)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from lunogen.billing import ledger
from lunogen.dashboard.charts import nice_ceiling
from lunogen.dashboard.usage_pages import compact, usd
from lunogen.kit.time import utcnow
from lunogen.llm.models import UsageRecord
from tests.agent.support import MODEL, Dev, create_agent, new_dev
from tests.billing.stripe_support import billing_settings
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.fakes.stripe import (  # noqa: F401 (fixtures)
    FakeStripe,
    stripe_fake,
    stripe_server,
)
from tests.helpers import Api, Signed

OTHER_MODEL = "anthropic/claude-3-haiku"
C = 1_000_000  # micro-credits per credit
FIGURES = (
    "calls",
    "failed_calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_calls",
)


@pytest.fixture
def settings_overrides(
    openrouter: FakeOpenRouter,
    stripe_fake: FakeStripe,  # noqa: F811
) -> dict[str, object]:
    return {**openrouter_settings(openrouter), **billing_settings(stripe_fake)}


# --- reading pages -------------------------------------------------------------------------------


class Page(HTMLParser):
    """What the tests read from a page: each chart's bar titles and axis ticks, each table's
    rows as cell texts, alerts and links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, list[str]]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.alerts: list[str] = []
        self.links: list[str] = []
        self._chart: str | None = None
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._capture: tuple[str, list[str]] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            assert a.get("role") == "img" and "viewbox" in a
            self._chart = str(a["aria-labelledby"]).split()[0].removesuffix("-t")
            self.charts[self._chart] = {"bars": [], "ticks": [], "labels": [], "values": []}
        elif tag == "title" and self._chart and self._capture is None:
            self._capture = ("bars", [])
        elif tag == "text" and self._chart:
            kind = "ticks" if "tick" in str(a.get("class")) else str(a.get("class")).split()[0]
            self._capture = (kind + "s" if kind in ("label", "value") else kind, [])
        elif tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))
        if a.get("role") == "alert":
            self._capture = ("alert", [])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("title", "text", "p") and self._capture is not None:
            kind, parts = self._capture
            text = "".join(parts).strip()
            if kind == "alert":
                self.alerts.append(text)
            elif self._chart and tag != "p":
                if kind == "bars" and tag == "title":
                    # The chart's own <title> is its name, not a bar.
                    if self.charts[self._chart].get("name") is None:
                        self.charts[self._chart]["name"] = [text]
                    else:
                        self.charts[self._chart]["bars"].append(text)
                else:
                    self.charts[self._chart].setdefault(kind, []).append(text)
            self._capture = None
        elif tag == "svg":
            self._chart = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._capture[1].append(data)
        if self._cell is not None:
            self._cell.append(data)


async def _get(person: Signed, path: str, status: int = 200) -> httpx.Response:
    response = await person.client.get(path)
    assert response.status_code == status, response.text
    return response


def _form(person: Signed, **fields: Any) -> dict[str, Any]:
    return {"csrf_token": person.csrf, **fields}


# --- usage ---------------------------------------------------------------------------------------


async def _insert(api: Api, owner: str, rows: list[dict[str, Any]]) -> None:
    async with api.app.state.sessionmaker() as session:
        for row in rows:
            session.add(
                UsageRecord(
                    **{
                        "owner_id": owner,
                        "requested_model": MODEL,
                        "answered_model": MODEL,
                        "outcome": "ok",
                        **row,
                    }
                )
            )
        await session.commit()


DAY1 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RANGE = "since=2026-03-01&until=2026-03-07"


async def _known_usage(api: Api) -> tuple[Dev, dict[str, Any], dict[str, Any]]:
    """Two agents of one developer, three days with calls in a week, two models; and another
    developer's call on the same day, which must show nowhere."""
    dev = await new_dev(api)
    shop = await create_agent(dev, name="Shop <b>helper</b>")
    desk = await create_agent(dev, name="=Desk")
    await _insert(
        api,
        dev.id,
        [
            {"agent_id": shop["id"], "created_at": DAY1, "prompt_tokens": 1000,
             "completion_tokens": 200, "cost_nano_usd": 1_500_000},
            {"agent_id": shop["id"], "created_at": DAY1 + timedelta(hours=14, minutes=59),
             "prompt_tokens": 300, "completion_tokens": 100, "cost_nano_usd": 500_000,
             "answered_model": OTHER_MODEL, "requested_model": OTHER_MODEL},
            {"agent_id": desk["id"], "created_at": DAY1 + timedelta(days=2),
             "prompt_tokens": 4000, "completion_tokens": 1000, "cost_nano_usd": 250_000_000},
            # A failed call: counted, costs nothing whatever its row says.
            {"agent_id": desk["id"], "created_at": DAY1 + timedelta(days=4),
             "prompt_tokens": 10, "completion_tokens": 0, "cost_nano_usd": 999,
             "outcome": "error", "answered_model": None},
            # Outside the range (the day after its last day): left out.
            {"agent_id": desk["id"], "created_at": datetime(2026, 3, 8, tzinfo=UTC),
             "prompt_tokens": 7, "cost_nano_usd": 7},
        ],
    )  # fmt: skip
    other = await new_dev(api)
    theirs = await create_agent(other, name="Theirs")
    await _insert(
        api,
        other.id,
        [{"agent_id": theirs["id"], "created_at": DAY1, "prompt_tokens": 77_777,
          "cost_nano_usd": 9_000_000_000}],
    )  # fmt: skip
    return dev, shop, desk


async def test_charts_and_tables_show_the_figures_of_known_calls(api: Api) -> None:
    dev, shop, _desk = await _known_usage(api)
    page = await _get(dev.person, f"/usage?{RANGE}")
    html = Page(page.text)
    assert set(html.charts) == {
        f"{m}-{g}" for m in ("tokens", "cost") for g in ("day", "model", "agent")
    }

    # By day: every day of the range is a column, days without calls at zero, oldest first.
    days = [f"2026-03-0{d}" for d in range(1, 8)]
    assert html.charts["tokens-day"]["bars"] == [
        f"{d}: {n}" for d, n in zip(days, ["0", "1,600", "0", "5,000", "0", "10", "0"], strict=True)
    ]
    assert html.charts["cost-day"]["bars"][1] == "2026-03-02: $0.002"
    assert html.charts["cost-day"]["bars"][3] == "2026-03-04: $0.25"
    assert html.charts["cost-day"]["bars"][5] == "2026-03-06: $0.00"  # failed: free
    # The value axis runs from 0 to a round number at or above the largest bar.
    assert html.charts["tokens-day"]["ticks"][:5] == ["0", "1.25k", "2.5k", "3.75k", "5k"]
    assert html.charts["tokens-day"]["ticks"][5] == "2026-03-01"  # the first day is labelled
    assert html.charts["tokens-day"]["ticks"][-1] == "2026-03-07"  # and the last
    assert html.charts["tokens-day"]["name"] == [
        "Tokens by day, 2026-03-01 to 2026-03-07 (prompt + completion)"
    ]

    # By agent: bars labelled with the names (escaped), values written at the bars.
    assert html.charts["tokens-agent"]["labels"] == ["=Desk", "Shop <b>helper</b>"]
    assert html.charts["tokens-agent"]["values"] == ["5,010", "1,600"]
    assert html.charts["cost-agent"]["values"] == ["$0.25", "$0.002"]
    assert "<b>helper" not in page.text and "&lt;b&gt;helper" in page.text
    # By model: the answering model, else the requested one.
    assert html.charts["tokens-model"]["labels"] == [MODEL, OTHER_MODEL]
    assert html.charts["tokens-model"]["values"] == ["6,210", "400"]

    # The same numbers as tables, with totals; another developer's call is nowhere.
    assert html.tables["table-agent"][1:] == [
        ["=Desk", "2", "1", "4,010", "1,000", "$0.25"],
        ["Shop <b>helper</b>", "2", "0", "1,300", "300", "$0.002"],
        ["Total", "4", "1", "5,310", "1,300", "$0.252"],
    ]
    assert html.tables["table-day"][1:] == [
        ["2026-03-02", "2", "0", "1,300", "300", "$0.002"],
        ["2026-03-04", "1", "0", "4,000", "1,000", "$0.25"],
        ["2026-03-06", "1", "1", "10", "0", "$0.00"],
        ["Total", "4", "1", "5,310", "1,300", "$0.252"],
    ]
    assert [row[0] for row in html.tables["table-model"][1:]] == [MODEL, OTHER_MODEL, "Total"]
    assert "77,777" not in page.text and "Theirs" not in page.text
    assert f'href="/agents/{shop["id"]}"' in page.text
    assert 'value="2026-03-01"' in page.text and 'value="2026-03-07"' in page.text
    assert "No model calls" not in page.text


async def test_the_csv_has_the_figures_of_the_api(api: Api) -> None:
    dev, _shop, desk = await _known_usage(api)
    for group_by in ("day", "model", "agent"):
        response = await _get(dev.person, f"/usage.csv?{RANGE}&group_by={group_by}")
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert (
            f"lunogen-usage-{group_by}-2026-03-01-2026-03-07.csv"
            in response.headers["content-disposition"]
        )
        rows = list(csv.DictReader(io.StringIO(response.text)))
        api_view = await dev.http.get(
            "/api/v1/usage",
            params={"since": "2026-03-01T00:00:00Z", "until": "2026-03-08T00:00:00Z",
                    "group_by": group_by},
        )  # fmt: skip
        body = api_view.json()
        groups = [*body["groups"], {**body["totals"], "key": "", "name": None}]
        assert len(rows) == len(groups)
        for row, group in zip(rows, groups, strict=True):
            for field in FIGURES:
                assert row[field] == str(group[field]), (group_by, field)
            if group_by == "agent" and group["key"] == desk["id"]:
                # A name a spreadsheet would run as a formula is quoted.
                assert row["name"] == "'=Desk"
            elif group["key"]:
                assert row["key"].lstrip("'") == group["key"]
        assert rows[-1]["group_by"] == "total" and rows[-1]["cost_usd"] == "0.252000000"
    # The page links each grouping's CSV for the same range.
    page = Page((await _get(dev.person, f"/usage?{RANGE}")).text)
    assert f"/usage.csv?{RANGE}&group_by=model" in page.links


async def test_a_real_turn_shows_in_the_default_range(api: Api, openrouter: FakeOpenRouter) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, name="Live")
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    openrouter.reply("hello", prompt_tokens=321, completion_tokens=12, cost=Decimal("0.000123"))
    said = await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": "hi"})
    assert said.status_code == 200, said.text
    page = await _get(dev.person, "/usage")
    html = Page(page.text)
    today = utcnow().date()
    assert f'value="{today.isoformat()}"' in page.text
    assert f'value="{(today - timedelta(days=29)).isoformat()}"' in page.text
    assert len(html.charts["tokens-day"]["bars"]) == 30
    assert html.charts["tokens-day"]["bars"][-1] == f"{today.isoformat()}: 333"
    assert html.tables["table-agent"][1] == ["Live", "1", "0", "321", "12", "$0.000123"]


async def test_no_calls_is_an_empty_state_with_the_next_step(api: Api) -> None:
    person = await api.sign_up()
    page = await _get(person, "/usage")
    assert "No model calls from" in page.text
    assert 'href="/agents"' in page.text
    assert "<svg" not in page.text
    assert 'aria-current="page">Usage<' in page.text


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("since=2026-03-07&until=2026-03-01", "the last day must be on or after the first day"),
        ("since=2026-13-01&until=2026-03-01", "since: '2026-13-01' is not a date (YYYY-MM-DD)"),
        ("since=yesterday", "since: 'yesterday' is not a date"),
        ("until=" + "9" * 60, "until: '" + "9" * 40 + "' is not a date"),
        ("since=2025-01-01&until=2026-03-01", "the range may span at most 366 days"),
        ("until=0001-01-05", "date out of range"),
        ("since=9999-12-01&until=9999-12-31", "date out of range"),
    ],
)
async def test_a_bad_range_is_an_error_on_the_page(api: Api, query: str, words: str) -> None:
    person = await api.sign_up()
    page = await _get(person, f"/usage?{query}", 422)
    assert Page(page.text).alerts == [words] or words in Page(page.text).alerts[0]
    assert "<svg" not in page.text
    assert 'type="date" name="since"' in page.text  # the form is there to fix it
    csv_answer = await _get(person, f"/usage.csv?{query}", 422)
    assert "text/html" in csv_answer.headers["content-type"]


async def test_the_longest_range_and_a_single_day_are_allowed(api: Api) -> None:
    person = await api.sign_up()
    await _get(person, "/usage?since=2025-03-01&until=2026-03-01")  # 366 days
    one = await _get(person, "/usage?since=2026-03-01&until=2026-03-01")
    assert "No model calls from 2026-03-01 to 2026-03-01" in one.text


async def test_the_csv_refuses_an_unknown_grouping(api: Api) -> None:
    person = await api.sign_up()
    refused = await _get(person, "/usage.csv?group_by=week", 422)
    assert "group_by: &#39;week&#39; is not one of day, model, agent" in refused.text


async def test_signed_out_usage_and_billing_send_to_sign_in(client: httpx.AsyncClient) -> None:
    for path in ("/usage", "/usage.csv", "/billing"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={path}"


def test_axis_tops_are_round_numbers() -> None:
    values = (1, 3, 7, Decimal("2.4"), 5000, 5001, Decimal("0.0021"))
    assert [nice_ceiling(v) for v in values] == [
        Decimal(1), Decimal(5), Decimal(10), Decimal("2.5"), Decimal(5000), Decimal(10000),
        Decimal("0.0025"),
    ]  # fmt: skip
    assert [compact(v) for v in (0, 750, 1250, 2_500_000, 10**9)] == [
        "0", "750", "1.25k", "2.5M", "1G",
    ]  # fmt: skip
    assert [usd(Decimal(v)) for v in ("0", "0.25", "0.0001245", "12")] == [
        "$0.00", "$0.25", "$0.0001245", "$12.00",
    ]  # fmt: skip


# --- billing -------------------------------------------------------------------------------------


async def _post_entries(api: Api, owner: str, count: int) -> None:
    async with api.app.state.sessionmaker() as session:
        for i in range(count):
            await ledger.post(
                session,
                account_id=owner,
                kind="adjustment",
                amount=(i + 1) * C if i % 2 == 0 else -C // 2,
                key=f"test:{owner}:{i}",
                description=f"entry {i}",
            )
        await session.commit()


async def test_the_page_shows_credits_plan_and_what_happens_at_zero(api: Api) -> None:
    person = await api.sign_up()
    page = await _get(person, "/billing")
    overview = (await person.client.get("/api/v1/billing")).json()
    assert f'id="available">{overview["available"]} credits<' in page.text
    assert f'id="balance">{overview["balance"]} credits<' in page.text
    assert f'<span id="held">{overview["held"]}</span> held' in page.text
    assert "reserved while model calls are in progress" in page.text
    assert 'id="plan">Free<' in page.text
    assert "pauses" in page.text and "resume by themselves" in page.text
    assert 'aria-current="page">Billing<' in page.text
    # Every pack and the custom amount are offered, each a form with the CSRF field.
    html = Page(page.text)
    forms = re.findall(r'<form method="post" action="/billing/checkout".*?</form>', page.text, re.S)
    assert len(forms) == 1 + 3 + 1  # three packs, the custom amount, Pro
    assert all(f'name="csrf_token" value="{person.csrf}"' in f for f in forms)
    assert "US$5.00" in page.text and "US$20.00" in page.text and "US$100.00" in page.text
    assert 'min="500" max="100000"' in page.text
    assert "Upgrade to Pro" in page.text
    # The starter grant is the first transaction.
    assert html.tables["transactions-table"][1][1] == "grant"


async def test_transactions_page_back_filter_and_download(api: Api) -> None:
    person = await api.sign_up()
    await _post_entries(api, person.id, 30)  # with the starter grant: 31 entries
    first = Page((await _get(person, "/billing")).text)
    rows = first.tables["transactions-table"][1:]
    assert len(rows) == 25
    assert rows[0][5] == "entry 29" and rows[0][2] == "\u22120.5"
    assert rows[1][5] == "entry 28" and rows[1][2] == "+29"
    older = [link for link in first.links if "before=" in link]
    assert len(older) == 1
    second = Page((await _get(person, older[0].split("#")[0])).text)
    rest = second.tables["transactions-table"][1:]
    assert [r[5] for r in rest] == [f"entry {i}" for i in range(4, -1, -1)] + [rest[-1][5]]
    assert rest[-1][1] == "grant"
    assert not [link for link in second.links if "before=" in link]
    assert "/billing#transactions" in second.links  # back to the newest

    grants = Page((await _get(person, "/billing?kind=grant")).text)
    assert [r[1] for r in grants.tables["transactions-table"][1:]] == ["grant"]
    assert "/api/v1/billing/transactions?kind=grant&format=csv" in grants.links

    download = await _get(person, "/api/v1/billing/transactions?format=csv")
    exported = list(csv.DictReader(io.StringIO(download.text)))
    assert len(exported) == 31
    assert [e["description"] for e in exported[:25]] == [r[5] for r in rows]
    assert "/api/v1/billing/transactions?format=csv" in first.links

    # Another account's entry id pages only through this account's entries.
    someone = await api.sign_up()
    async with api.app.state.sessionmaker() as session:
        [their_grant] = await ledger.entries(session, someone.id)
    theirs = Page((await _get(person, f"/billing?before={their_grant.id + 1}")).text)
    described = [r[5] for r in theirs.tables["transactions-table"][1:]]
    assert "entry 29" in described and all(d.startswith("entry") for d in described[:25])
    assert someone.id not in str(theirs.tables)

    for bad in ("before=abc", "before=0", "kind=bonus", f"before={2**63}"):
        refused = await _get(person, f"/billing?{bad}", 422)
        assert "is not" in refused.text


async def test_the_low_credit_threshold_is_saved_from_the_form(api: Api) -> None:
    person = await api.sign_up()
    saved = await person.client.post(
        "/billing/threshold", data=_form(person, low_credit_threshold="42.5")
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/billing?saved=threshold"
    page = await _get(person, saved.headers["location"])
    assert "Low-credit alert saved." in page.text
    assert 'name="low_credit_threshold" inputmode="decimal" value="42.5"' in page.text
    assert (await person.client.get("/api/v1/billing")).json()["low_credit_threshold"] == "42.5"

    for bad in ("", "lots", "-1", "1000001", "0.0000001", "NaN"):
        refused = await person.client.post(
            "/billing/threshold", data=_form(person, low_credit_threshold=bad)
        )
        assert refused.status_code == 422, bad
        assert "Low-credit alert: enter a number of credits" in Page(refused.text).alerts[0]
        assert f'value="{bad}" required aria-describedby="alert-help" aria-invalid="true"' in (
            refused.text
        )
    no_csrf = await person.client.post("/billing/threshold", data={"low_credit_threshold": "1"})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    assert (await person.client.get("/api/v1/billing")).json()["low_credit_threshold"] == "42.5"


def _to_stripe(response: httpx.Response) -> str:
    """Where the checkout page sends the browser: its instant refresh and its link agree."""
    assert response.status_code == 200, response.text
    refresh = re.search(r'<meta http-equiv="refresh" content="0; url=([^"]+)">', response.text)
    link = re.search(r'<a class="button" id="to-stripe" href="([^"]+)">', response.text)
    assert refresh and link and refresh.group(1) == link.group(1)
    return refresh.group(1)


async def test_buying_a_pack_a_custom_amount_or_pro_goes_to_stripe(
    api: Api,
    stripe_fake: FakeStripe,  # noqa: F811
) -> None:
    person = await api.sign_up()
    pack = await person.client.post("/billing/checkout", data=_form(person, pack="standard"))
    [session] = stripe_fake.sessions.values()
    assert _to_stripe(pack) == session["url"]
    assert "The standard pack of credits" in pack.text
    assert session["url"].startswith(f"{stripe_fake.api_base}/c/pay/")
    assert session["metadata"] == {"account_id": person.id, "credits": "2000", "kind": "topup"}
    assert session["success_url"].startswith("http://testserver/billing?checkout=success")
    assert session["cancel_url"] == "http://testserver/billing?checkout=cancelled"

    custom = await person.client.post("/billing/checkout", data=_form(person, credits=" 750 "))
    session_id = _to_stripe(custom).rsplit("/", 1)[1]
    assert stripe_fake.sessions[session_id]["amount_total"] == 750
    assert "750 credits" in custom.text

    pro = await person.client.post("/billing/checkout", data=_form(person, plan="pro"))
    assert _to_stripe(pro) == stripe_fake.sessions[_to_stripe(pro).rsplit("/", 1)[1]]["url"]
    assert stripe_fake.last_request.params["mode"] == "subscription"
    assert "The Pro plan, monthly" in pro.text
    assert len(stripe_fake.sessions) == 3
    # Nothing is credited until Stripe's webhook says so.
    assert (await person.client.get("/api/v1/billing")).json()["balance"] == "100"

    back = await _get(person, "/billing?checkout=success&session_id=cs_test_x")
    assert "Your payment is being confirmed" in back.text
    assert "cs_test_x" not in back.text
    cancelled = await _get(person, "/billing?checkout=cancelled")
    assert "Checkout cancelled: nothing was charged." in cancelled.text


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"credits": "499"}, 422, "between 500 and 100000 credits"),
        ({"credits": "100001"}, 422, "between 500 and 100000 credits"),
        ({"credits": "9" * 40}, 422, "between 500 and 100000 credits"),
        ({"credits": "7.5"}, 422, "is not a whole number of credits"),
        ({"credits": "\u0662\u0660\u0660\u0660"}, 422, "is not a whole number"),
        ({"credits": ""}, 422, "enter a number of credits to buy"),
        ({"pack": "huge"}, 422, "unknown pack &#39;huge&#39;"),
        ({"plan": "enterprise"}, 422, "is not for sale"),
    ],
)
async def test_a_refused_choice_is_shown_and_reaches_no_stripe(
    api: Api,
    stripe_fake: FakeStripe,  # noqa: F811
    fields: dict[str, str],
    status: int,
    words: str,
) -> None:
    person = await api.sign_up()
    response = await person.client.post("/billing/checkout", data=_form(person, **fields))
    assert response.status_code == status, response.text
    alerts = Page(response.text).alerts
    assert len(alerts) == 1 and words.replace("&#39;", "'") in alerts[0]
    assert 'id="balance"' in response.text  # the whole page, to try again
    assert stripe_fake.api_requests == []


async def test_pro_twice_and_a_stripe_failure_are_explained(
    api: Api,
    stripe_fake: FakeStripe,  # noqa: F811
) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")
    page = await _get(person, "/billing")
    assert "You are on Pro" in page.text and "Upgrade to Pro" not in page.text
    again = await person.client.post("/billing/checkout", data=_form(person, plan="pro"))
    assert again.status_code == 409
    assert Page(again.text).alerts == ["You are already on the pro plan"]
    stripe_fake.fail(400, "Your account cannot currently make live charges.")
    failed = await person.client.post("/billing/checkout", data=_form(person, pack="starter"))
    assert failed.status_code == 502
    assert "Stripe answered HTTP 400" in Page(failed.text).alerts[0]


async def test_checkout_needs_the_csrf_field(
    api: Api,
    stripe_fake: FakeStripe,  # noqa: F811
) -> None:
    person = await api.sign_up()
    refused = await person.client.post("/billing/checkout", data={"pack": "starter"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = await person.client.post(
        "/billing/checkout", data={"pack": "starter", "csrf_token": "x" * 32}
    )
    assert wrong.status_code == 403
    assert stripe_fake.api_requests == []


async def test_without_stripe_the_page_says_so_instead_of_buttons(
    api: Api,
    stripe_fake: FakeStripe,  # noqa: F811
) -> None:
    person = await api.sign_up()
    settings = api.app.state.settings
    api.app.state.settings = settings.model_copy(
        update={"stripe_secret_key": None, "stripe_pro_price_id": None}
    )
    page = await _get(person, "/billing")
    assert "payments (Stripe) are not configured" in page.text
    assert 'id="no-stripe"' in page.text and 'id="no-pro"' in page.text
    assert 'action="/billing/checkout"' not in page.text
    assert "Upgrade to Pro" not in page.text
    # A form posted anyway (an old tab) is told why, with the setting's name.
    response = await person.client.post("/billing/checkout", data=_form(person, pack="starter"))
    assert response.status_code == 503
    assert "LUNOGEN_STRIPE_SECRET_KEY" in Page(response.text).alerts[0]
    # Credits can be sold without Pro: then only Pro says it is not for sale.
    api.app.state.settings = settings.model_copy(update={"stripe_pro_price_id": None})
    page = await _get(person, "/billing")
    assert 'id="no-stripe"' not in page.text and 'id="no-pro"' in page.text
    assert "The Pro plan is not for sale on this server." in page.text
    assert stripe_fake.api_requests == []
