"""The spend caps pages: an agent's caps and spend, and the account's cap beside usage."""

from __future__ import annotations

from typing import Any

from tests.agent.support import create_agent, new_dev
from tests.helpers import Api, Signed


def _form(person: Signed, **fields: Any) -> dict[str, Any]:
    return {"csrf_token": person.csrf, **fields}


async def test_an_agents_caps_are_shown_and_saved_from_the_form(api: Api) -> None:
    dev = await new_dev(api)
    person = dev.person
    agent = await create_agent(dev, name="Helper")
    detail = await person.client.get(f"/agents/{agent['id']}")
    assert f'href="/agents/{agent["id"]}/caps"' in detail.text
    page = await person.client.get(f"/agents/{agent['id']}/caps")
    assert page.status_code == 200
    assert 'id="cap-spend"' in page.text and f'value="{person.csrf}"' in page.text
    saved = await person.client.post(
        f"/agents/{agent['id']}/caps",
        data=_form(
            person,
            daily_credits="3",
            monthly_credits="",
            turn_credits="0.5",
            turn_tokens="12000",
            reply_text="Closed for today.",
        ),
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/agents/{agent['id']}/caps?saved=1"
    shown = await person.client.get(saved.headers["location"])
    assert "Saved. The caps apply" in shown.text
    assert 'name="daily_credits" type="text" inputmode="decimal" value="3"' in shown.text
    assert "Closed for today.</textarea>" in shown.text
    api_view = (await dev.http.get(f"/api/v1/agents/{agent['id']}/caps")).json()
    assert api_view["daily_credits"] == "3" and api_view["monthly_credits"] is None
    assert api_view["turn_tokens"] == 12000

    refused = await person.client.post(
        f"/agents/{agent['id']}/caps",
        data=_form(person, daily_credits="-4", turn_tokens="many"),
    )
    assert refused.status_code == 422
    assert 'role="alert"' in refused.text and "Daily cap:" in refused.text
    assert "Per-turn cap in tokens:" in refused.text
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/caps")).json() == api_view
    no_csrf = await person.client.post(f"/agents/{agent['id']}/caps", data={"daily_credits": "1"})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text


async def test_another_owners_agent_caps_page_is_not_found(api: Api) -> None:
    owner, stranger = await new_dev(api), await new_dev(api)
    agent = await create_agent(owner)
    assert (await stranger.person.client.get(f"/agents/{agent['id']}/caps")).status_code == 404
    posted = await stranger.person.client.post(
        f"/agents/{agent['id']}/caps", data=_form(stranger.person, daily_credits="1")
    )
    assert posted.status_code == 404
    assert (await owner.http.get(f"/api/v1/agents/{agent['id']}/caps")).json()[
        "daily_credits"
    ] is None


async def test_the_account_cap_beside_usage(api: Api) -> None:
    dev = await new_dev(api)
    person = dev.person
    agent = await create_agent(dev, name="Seller")
    await dev.http.put(f"/api/v1/agents/{agent['id']}/caps", json={"daily_credits": "2"})
    usage = await person.client.get("/usage")
    assert 'href="/usage/caps"' in usage.text
    page = await person.client.get("/usage/caps")
    assert page.status_code == 200
    assert f'href="/agents/{agent["id"]}/caps">Seller</a>' in page.text
    assert "0 of 2" in page.text
    saved = await person.client.post("/usage/caps", data=_form(person, monthly_credits="25"))
    assert saved.status_code == 303 and saved.headers["location"] == "/usage/caps?saved=1"
    shown = await person.client.get("/usage/caps?saved=1")
    assert 'value="25"' in shown.text and "of a cap of 25 (0 %)" in shown.text
    refused = await person.client.post("/usage/caps", data=_form(person, monthly_credits="x"))
    assert refused.status_code == 422 and "Monthly cap:" in refused.text
    assert (await dev.http.get("/api/v1/billing/cap")).json()["monthly_credits"] == "25"
    cleared = await person.client.post("/usage/caps", data=_form(person, monthly_credits=""))
    assert cleared.status_code == 303
    assert (await dev.http.get("/api/v1/billing/cap")).json()["monthly_credits"] is None
