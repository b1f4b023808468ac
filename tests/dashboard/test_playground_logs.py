"""The playground and runtime log pages over HTTP: what they render, the cost route, filters,
and another tenant's agent ids giving the 404 page."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from lunogen.runlog.logs import log_event
from tests.agent.support import Dev, create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api, sse_events

META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


async def _running(api: Api, **overrides: Any) -> tuple[Dev, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev, **overrides)
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    return dev, str(agent["id"])


async def _playground_say(dev: Dev, agent_id: str, text: str, csrf: str) -> dict[str, Any]:
    """Send as the page's script does: the session cookie, the CSRF header, streamed."""
    response = await dev.person.client.post(
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": text, "contact": f"playground:{dev.id}", "stream": True},
        headers={"X-CSRF-Token": csrf, "Accept": "text/event-stream"},
    )
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1][0] == "done", events
    return events[-1][1]


async def test_the_playground_shows_the_conversation_with_the_cost_of_each_reply(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running(api, name="Shop helper")
    page = await dev.person.client.get(f"/agents/{agent_id}/playground")
    assert page.status_code == 200
    assert "Playground: Shop helper" in page.text
    assert "No messages yet" in page.text and 'id="playground-empty" class="muted">' in page.text
    assert f'data-contact="playground:{dev.id}"' in page.text
    assert '<script src="/static/playground.js" defer></script>' in page.text
    match = META.search(page.text)
    assert match is not None
    csrf = match.group(1)

    openrouter.reply("Hello from the shop", cost=Decimal("0.000021"))
    done = await _playground_say(dev, agent_id, "Hi there", csrf)
    # An API client's thread is another conversation: it does not show here.
    openrouter.reply("Answer on the API")
    api_side = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": "From the API"}
    )
    assert api_side.status_code == 200, api_side.text

    page = await dev.person.client.get(f"/agents/{agent_id}/playground")
    assert "Hi there" in page.text and "Hello from the shop" in page.text
    assert "From the API" not in page.text and "Answer on the API" not in page.text
    assert 'id="playground-empty" class="muted" hidden>' in page.text
    assert "US$0.000021 · " in page.text

    cost = await dev.person.client.get(f"/agents/{agent_id}/playground/cost/{done['message_id']}")
    assert cost.status_code == 200
    assert cost.headers["cache-control"] == "no-store"
    body = cost.json()
    assert body["cost_usd"] == "0.000021000" and body["calls"] == 1
    assert body["label"].startswith("US$0.000021 · ")
    assert body["prompt_tokens"] > 0 and body["completion_tokens"] > 0


async def test_the_page_token_is_the_one_the_api_wants(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running(api)
    page = await dev.person.client.get(f"/agents/{agent_id}/playground")
    match = META.search(page.text)
    assert match is not None
    refused = await dev.person.client.post(
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": "Hi", "contact": f"playground:{dev.id}", "stream": True},
        headers={"X-CSRF-Token": "not-the-token"},
    )
    assert refused.status_code == 403
    openrouter.reply("Fine")
    done = await _playground_say(dev, agent_id, "Hi", match.group(1))
    assert done["text"] == "Fine"


async def test_a_stopped_agent_says_so_on_its_playground(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, name="Sleeper")
    page = await dev.person.client.get(f"/agents/{agent['id']}/playground")
    assert page.status_code == 200
    assert "This agent is draft: it answers only while it runs." in page.text
    assert f'href="/agents/{agent["id"]}"' in page.text


async def test_another_tenants_agent_gives_the_404_page(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    owner, agent_id = await _running(api)
    page = await owner.person.client.get(f"/agents/{agent_id}/playground")
    match = META.search(page.text)
    assert match is not None
    openrouter.reply("Private answer", cost=Decimal("0.5"))
    done = await _playground_say(owner, agent_id, "Secret question", match.group(1))

    stranger = await new_dev(api)
    for path in (
        f"/agents/{agent_id}/playground",
        f"/agents/{agent_id}/logs",
        f"/agents/{agent_id}/playground/cost/{done['message_id']}",
        "/agents/not-an-id/playground",
        "/agents/00000000-0000-0000-0000-000000000000/logs",
    ):
        response = await stranger.person.client.get(path)
        assert response.status_code == 404, path
        assert "Not found" in response.text and "Secret question" not in response.text
    # The stranger's own agent cannot read the owner's costs either: only its own calls count.
    own = await create_agent(stranger)
    cost = await stranger.person.client.get(
        f"/agents/{own['id']}/playground/cost/{done['message_id']}"
    )
    assert cost.status_code == 200
    assert cost.json()["calls"] == 0 and cost.json()["cost_usd"] == "0.000000000"
    too_long = await owner.person.client.get(f"/agents/{agent_id}/playground/cost/{'x' * 37}")
    assert too_long.status_code == 404


async def test_signed_out_the_pages_send_to_sign_in(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    anonymous = api.new_client()
    for tail in ("playground", "logs"):
        away = await anonymous.get(f"/agents/{agent['id']}/{tail}")
        assert away.status_code == 303
        assert away.headers["location"] == f"/login?next=/agents/{agent['id']}/{tail}"


async def _log(api: Api, agent_id: str, *lines: tuple[str, str, str]) -> None:
    async with api.app.state.sessionmaker() as session:
        for event, level, message in lines:
            log_event(
                session,
                agent_id=agent_id,
                event=event,
                level=level,  # type: ignore[arg-type]
                message=message,
                details={"said": message},
            )
        await session.commit()


async def test_the_log_page_lists_the_newest_lines_and_filters_them(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, name="Logger")
    agent_id = str(agent["id"])
    empty = await dev.person.client.get(f"/agents/{agent_id}/logs")
    assert empty.status_code == 200
    assert "Runtime log: Logger" in empty.text
    # A draft agent has written nothing yet: the empty state says how to get lines.
    assert 'class="log-line ' not in empty.text
    assert 'id="log-empty" class="muted">' in empty.text and "No log lines yet" in empty.text
    assert f'href="/agents/{agent_id}/playground"' in empty.text

    await _log(
        api,
        agent_id,
        ("tool.call", "info", "current_time: ok"),
        ("turn.failed", "warning", "The model is slow <today>"),
        ("turn.failed", "error", "The model is gone"),
    )
    page = await dev.person.client.get(f"/agents/{agent_id}/logs")
    assert "current_time: ok" in page.text and "The model is gone" in page.text
    assert "The model is slow &lt;today&gt;" in page.text  # escaped
    assert '<option value="tool.call">tool.call</option>' in page.text
    assert page.text.index("current_time: ok") < page.text.index("The model is gone")
    stream = re.search(r'data-stream="/api/v1/agents/[^"]+/logs/stream\?cursor=(\d+)"', page.text)
    assert stream is not None and int(stream.group(1)) > 0
    assert '<script src="/static/logs.js" defer></script>' in page.text

    warnings = await dev.person.client.get(f"/agents/{agent_id}/logs?level=warning")
    assert "The model is slow" in warnings.text and "The model is gone" in warnings.text
    assert "current_time: ok" not in warnings.text
    assert '<option value="warning" selected>' in warnings.text
    assert 'data-level="warning"' in warnings.text

    tools = await dev.person.client.get(f"/agents/{agent_id}/logs?kind=tool.call")
    assert "current_time: ok" in tools.text and "The model is gone" not in tools.text
    assert '<option value="tool.call" selected>' in tools.text

    both = await dev.person.client.get(f"/agents/{agent_id}/logs?level=error&kind=tool.call")
    assert "No line matches these filters yet" in both.text
    assert 'class="log-line ' not in both.text
    assert "Show everything" in both.text


async def test_bad_log_filters_are_refused_clearly(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    bad_level = await dev.person.client.get(f"/agents/{agent['id']}/logs?level=loud")
    assert bad_level.status_code == 422
    assert "level must be one of debug, info, warning, error" in bad_level.text
    bad_kind = await dev.person.client.get(f"/agents/{agent['id']}/logs?kind={'k' * 61}")
    assert bad_kind.status_code == 422
    assert "kind is at most 60 characters" in bad_kind.text
