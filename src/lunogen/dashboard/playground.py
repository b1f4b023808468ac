"""The playground: talk to an agent in the browser.

The page shows the conversation so far; its script (`static/playground.js`) sends each message
through the API channel (`POST /api/v1/agents/{id}/messages` with `stream: true`, the session
cookie and the `X-CSRF-Token` header from the page's `csrf-token` meta) and shows the reply as
its server-sent events arrive, then asks `…/playground/cost/{message_id}` what it cost. The
conversation is the API channel's thread with the contact `playground:<user id>`, apart from
the threads of API clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from lunogen.agent.service import get_agent
from lunogen.channel.api import API_CHANNEL
from lunogen.dashboard.shell import SignedIn, page, page_router
from lunogen.db import DbSession
from lunogen.errors import NotFoundError
from lunogen.kit.crypto import KeyRing
from lunogen.llm.usage_service import Figures, usage_by_message
from lunogen.runtime.models import Message
from lunogen.runtime.service import contact_messages

router = page_router()

HISTORY = 50  # messages shown on load


def playground_contact(user_id: str) -> str:
    """The contact of a person's playground thread with any of their agents."""
    return f"playground:{user_id}"


@dataclass(frozen=True)
class Said:
    id: str
    role: str
    text: str
    status: str
    figures: Figures | None  # a reply's cost: the calls made to answer its message


def cost_label(figures: Figures) -> str:
    """`US$0.000012 · 42 tokens` (and the calls when a tool made more than one)."""
    whole, _, fraction = figures.cost_usd.partition(".")
    usd = f"US${whole}.{fraction.rstrip('0').ljust(2, '0')}"
    parts = [usd, f"{figures.prompt_tokens + figures.completion_tokens} tokens"]
    if figures.calls > 1:
        parts.append(f"{figures.calls} model calls")
    if figures.unpriced_calls:
        parts.append(f"{figures.unpriced_calls} not priced yet")
    if figures.failed_calls:
        parts.append(f"{figures.failed_calls} failed")
    return " · ".join(parts)


def cost_json(figures: Figures) -> dict[str, int | str]:
    """What the page shows of a reply's cost (the same figures as the usage reports)."""
    return {
        "label": cost_label(figures),
        "cost_usd": figures.cost_usd,
        "calls": figures.calls,
        "failed_calls": figures.failed_calls,
        "prompt_tokens": figures.prompt_tokens,
        "completion_tokens": figures.completion_tokens,
        "unpriced_calls": figures.unpriced_calls,
    }


def _said(messages: list[Message], costs: dict[str, Figures], keyring: KeyRing) -> list[Said]:
    return [
        Said(
            id=m.id,
            role=m.role,
            text=keyring.decrypt(m.content),
            status=m.status,
            figures=costs.get(m.reply_to_id) if m.reply_to_id else None,
        )
        for m in messages
    ]


@router.get("/agents/{agent_id}/playground")
async def playground(request: Request, agent_id: str, viewer: SignedIn, db: DbSession) -> Response:
    owner_id = viewer.user.id
    agent = await get_agent(db, owner_id=owner_id, agent_id=agent_id, with_channels=False)
    messages = await contact_messages(
        db,
        agent_id=agent.id,
        channel_key=API_CHANNEL,
        contact=playground_contact(owner_id),
        limit=HISTORY,
    )
    answered = [m.reply_to_id for m in messages if m.reply_to_id]
    costs = await usage_by_message(db, owner_id=owner_id, agent_id=agent.id, message_ids=answered)
    return page(
        request,
        viewer,
        "playground/page.html",
        section="agents",
        agent=agent,
        contact=playground_contact(owner_id),
        conversation=_said(messages, costs, request.app.state.keyring),
        cost_label=cost_label,
    )


@router.get("/agents/{agent_id}/playground/cost/{message_id}")
async def reply_cost(
    agent_id: str, message_id: str, viewer: SignedIn, db: DbSession
) -> JSONResponse:
    """The cost of the calls that answered `message_id` (zero before any call was recorded),
    counted over this owner's calls for this agent only."""
    owner_id = viewer.user.id
    agent = await get_agent(db, owner_id=owner_id, agent_id=agent_id, with_channels=False)
    if len(message_id) > 36:
        raise NotFoundError(error="Message not found")
    found = await usage_by_message(
        db, owner_id=owner_id, agent_id=agent.id, message_ids=[message_id]
    )
    figures = found.get(message_id, Figures())
    return JSONResponse(
        {"message_id": message_id, **cost_json(figures)}, headers={"Cache-Control": "no-store"}
    )
