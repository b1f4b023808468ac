"""An agent's Channels page: each channel's state, the setup guide of each type, adding and
removing channels, the access policy, pairing codes and contacts.

Channels change through `agent.service.update_agent` with the whole list, as `PATCH` does: a
kept channel is sent with its id and its public fields, its secrets left out (they keep their
stored values). A webhook's generated `whsec_` secret and a pairing code exist in plain text only
in the response that made them, so those two answers are pages (not redirects), never cached.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import Response

from lunogen.agent import service
from lunogen.agent.models import Agent, AgentChannel
from lunogen.agent.schemas import AgentUpdate
from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.auth.principal import Principal
from lunogen.channel import endpoints as channel_api
from lunogen.channel.access import config_policy
from lunogen.channel.delivery import last_deliveries
from lunogen.channel.schemas import CHANNEL_TYPES
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError, NotFoundError, validation_details

router = page_router()

TYPE_NAMES = {
    "webchat": "Web chat",
    "webhook": "Webhook",
    "telegram": "Telegram",
    "whatsapp": "WhatsApp",
}
MESSAGING = frozenset({"telegram", "whatsapp"})
_NO_STORE = {"Cache-Control": "no-store"}


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _lines(value: str) -> list[str]:
    return [part.strip() for part in value.replace(",", "\n").splitlines() if part.strip()]


def _kept(row: AgentChannel) -> dict[str, Any]:
    """A channel as a PATCH keeps it: its id and public fields, no secrets."""
    return {**row.config, "id": row.id, "type": row.type}


def _access(form: FormData) -> dict[str, Any]:
    return {"policy": _text(form, "policy"), "allowlist": _lines(_text(form, "allowlist"))}


def _posted_channel(kind: str, form: FormData) -> dict[str, Any]:
    """The API body of a new channel of `kind` from its form; empty optional fields are left
    out so that the API's defaults apply."""
    body: dict[str, Any] = {"type": kind}
    if kind == "webhook":
        body["mode"] = _text(form, "mode") or "sync"
        fields = ["callback_url"]
    elif kind == "whatsapp":
        fields = [
            "phone_number_id",
            "access_token",
            "app_secret",
            "verify_token",
            "template_name",
            "template_language",
        ]
        body["access"] = _access(form)
    elif kind == "telegram":
        fields = ["bot_token", "groups", "greeting"]
        body["access"] = _access(form)
    else:
        fields = ["title", "greeting"]
        body["allowed_origins"] = _lines(_text(form, "allowed_origins"))
    for name in fields:
        value = _text(form, name)
        if value:
            body[name] = value
    return body


def _public_values(form: FormData) -> dict[str, str]:
    """What the form shows again after a refusal: never the secrets typed."""
    secret = {"access_token", "app_secret", "verify_token", "bot_token"}
    return {k: v for k, v in form.items() if isinstance(v, str) and k not in secret}


def _field_of(name: str) -> str:
    # "channels.2.whatsapp.access_token" / "channels.2.access.policy" → the form field
    parts = [p for p in name.split(".")[2:] if p not in CHANNEL_TYPES]
    return ".".join(parts) or name


def _problem_text(details: list[dict[str, Any]]) -> str:
    return "; ".join(f"{_field_of(str(d['field']))}: {d['message']}" for d in details)


async def _apply(
    request: Request,
    db: AsyncSession,
    principal: Principal,
    agent: Agent,
    channels: list[dict[str, Any]],
) -> dict[str, dict[str, str]]:
    """Save the channel list; raises `LunogenError` (422 with the API's details) if refused."""
    try:
        data = AgentUpdate.model_validate({"channels": channels})
    except ValidationError as exc:
        details = validation_details([dict(e) for e in exc.errors()])
        error = LunogenError(_problem_text(details), error="Validation failed", status_code=422)
        raise error from None
    try:
        _agent, revealed = await service.update_agent(
            db,
            principal=principal,
            agent_id=agent.id,
            data=data,
            keyring=request.app.state.keyring,
        )
    except LunogenError as exc:
        refused: list[dict[str, Any]] | None = exc.extra.get("details")
        if exc.status_code == 422 and refused:
            raise LunogenError(
                _problem_text(refused), error="Validation failed", status_code=422
            ) from None
        raise
    return revealed


def _urls(request: Request, agent: Agent) -> dict[str, dict[str, str]]:
    base = str(request.app.state.settings.public_url).rstrip("/")
    urls: dict[str, dict[str, str]] = {}
    for row in agent.channels:
        if row.type == "webhook":
            urls[row.id] = {"inbound": f"{base}/hooks/webhook/{row.id}"}
        elif row.type == "whatsapp":
            urls[row.id] = {"callback": f"{base}/hooks/whatsapp/{row.id}"}
        elif row.type == "webchat":
            urls[row.id] = {
                "page": f"{base}/chat/{row.id}",
                "snippet": f'<script src="{base}/chat/widget.js" data-channel="{row.id}" '
                "async></script>",
            }
    return urls


async def _channels_page(
    request: Request,
    viewer: Viewer,
    principal: Principal,
    db: AsyncSession,
    agent: Agent,
    *,
    flash: str | None = None,
    error: str | None = None,
    revealed: dict[str, dict[str, str]] | None = None,
    pairing: channel_api.PairingCodeOut | None = None,
    status_code: int = 200,
) -> Response:
    contacts: dict[str, list[channel_api.ContactOut]] = {}
    for row in agent.channels:
        if row.type in MESSAGING:
            found = await channel_api.list_channel_contacts(agent.id, row.id, principal, db)
            contacts[row.id] = found[:50]
    last = await last_deliveries(db, channel_ids=[row.id for row in agent.channels])
    response = page(
        request,
        viewer,
        "agents/channels.html",
        section="agents",
        status_code=status_code,
        agent=agent,
        urls=_urls(request, agent),
        policies={row.id: config_policy(row.config) for row in agent.channels},
        contacts=contacts,
        last=last,
        type_names=TYPE_NAMES,
        kinds=[k for k in ("webchat", "webhook", "telegram", "whatsapp") if k in CHANNEL_TYPES],
        messaging=MESSAGING,
        revealed=revealed or {},
        pairing=pairing,
        flash=flash,
        error=error,
    )
    if revealed or pairing:
        response.headers.update(_NO_STORE)
    return response


_FLASHES = {
    "removed": "Channel removed. Its provider is told to forget it.",
    "access": "Access policy saved.",
    "enabled": "Channel enabled again.",
    "unpaired": "Pairing revoked.",
    "added": "Channel added.",
}


@router.get("/agents/{agent_id}/channels")
async def channels_page(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsRead, db: DbSession
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    flash = _FLASHES.get(request.query_params.get("outcome", ""))
    return await _channels_page(request, viewer, principal, db, agent, flash=flash)


def _kind(kind: str) -> str:
    if kind not in TYPE_NAMES or kind not in CHANNEL_TYPES:
        raise NotFoundError(error="No such channel type")
    return kind


def _new_page(
    request: Request,
    viewer: Viewer,
    agent: Agent,
    kind: str,
    *,
    values: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    base = str(request.app.state.settings.public_url).rstrip("/")
    return page(
        request,
        viewer,
        "agents/channel_new.html",
        section="agents",
        status_code=status_code,
        agent=agent,
        kind=kind,
        type_name=TYPE_NAMES[kind],
        base=base,
        values=values or {},
        error=error,
    )


@router.get("/agents/{agent_id}/channels/new/{kind}")
async def new_channel_page(
    agent_id: str, kind: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    return _new_page(request, viewer, agent, _kind(kind))


@router.post("/agents/{agent_id}/channels/new/{kind}")
async def add_channel(
    agent_id: str,
    kind: str,
    request: Request,
    viewer: SignedIn,
    principal: AgentsWrite,
    db: DbSession,
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    kind = _kind(kind)
    form = await request.form()
    before = {row.id for row in agent.channels}
    channels = [_kept(row) for row in agent.channels] + [_posted_channel(kind, form)]
    try:
        revealed = await _apply(request, db, principal, agent, channels)
    except LunogenError as exc:
        if exc.status_code == 404 or exc.status_code >= 500:
            raise
        return _new_page(
            request,
            viewer,
            agent,
            kind,
            values=_public_values(form),
            error=exc.message or exc.error,
            status_code=exc.status_code,
        )
    if not revealed:
        return RedirectResponse(f"/agents/{agent.id}/channels?outcome=added", status_code=303)
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent.id)
    added = [row.id for row in agent.channels if row.id not in before]
    return await _channels_page(
        request,
        viewer,
        principal,
        db,
        agent,
        flash="Channel added. Copy its signing secret now: it is not shown again.",
        revealed={cid: revealed[cid] for cid in added if cid in revealed},
    )


def _channel(agent: Agent, channel_id: str) -> AgentChannel:
    row = next((row for row in agent.channels if row.id == channel_id), None)
    if row is None:
        raise NotFoundError(error="Channel not found")
    return row


@router.post("/agents/{agent_id}/channels/{channel_id}/access")
async def save_access(
    agent_id: str,
    channel_id: str,
    request: Request,
    viewer: SignedIn,
    principal: AgentsWrite,
    db: DbSession,
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    row = _channel(agent, channel_id)
    form = await request.form()
    channels = [_kept(other) for other in agent.channels]
    index = [other.id for other in agent.channels].index(row.id)
    channels[index]["access"] = _access(form)
    try:
        await _apply(request, db, principal, agent, channels)
    except LunogenError as exc:
        if exc.status_code == 404 or exc.status_code >= 500:
            raise
        return await _channels_page(
            request,
            viewer,
            principal,
            db,
            agent,
            error=exc.message or exc.error,
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/agents/{agent.id}/channels?outcome=access", status_code=303)


@router.post("/agents/{agent_id}/channels/{channel_id}/pairing-code")
async def make_pairing_code(
    agent_id: str,
    channel_id: str,
    request: Request,
    viewer: SignedIn,
    principal: AgentsWrite,
    db: DbSession,
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    _channel(agent, channel_id)
    try:
        code = await channel_api.create_pairing_code(agent.id, channel_id, principal, db)
    except LunogenError as exc:
        if exc.status_code == 404 or exc.status_code >= 500:
            raise
        return await _channels_page(
            request,
            viewer,
            principal,
            db,
            agent,
            error=exc.message or exc.error,
            status_code=exc.status_code,
        )
    return await _channels_page(request, viewer, principal, db, agent, pairing=code)


@router.post("/agents/{agent_id}/channels/{channel_id}/enable")
async def enable_channel(
    agent_id: str,
    channel_id: str,
    viewer: SignedIn,
    principal: AgentsWrite,
    db: DbSession,
) -> Response:
    await channel_api.enable_agent_channel(agent_id, channel_id, principal, db)
    return RedirectResponse(f"/agents/{agent_id}/channels?outcome=enabled", status_code=303)


@router.post("/agents/{agent_id}/channels/{channel_id}/unpair")
async def unpair_contact(
    agent_id: str,
    channel_id: str,
    request: Request,
    viewer: SignedIn,
    principal: AgentsWrite,
    db: DbSession,
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    _channel(agent, channel_id)
    contact = _text(await request.form(), "contact")
    try:
        await channel_api.unpair_contact(agent.id, channel_id, contact, principal, db)
    except NotFoundError as exc:  # the channel is there: the contact is not paired (any more)
        return await _channels_page(
            request, viewer, principal, db, agent, error=exc.message, status_code=404
        )
    return RedirectResponse(f"/agents/{agent_id}/channels?outcome=unpaired", status_code=303)


@router.get("/agents/{agent_id}/channels/{channel_id}/remove")
async def remove_channel_page(
    agent_id: str, channel_id: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    row = _channel(agent, channel_id)
    return page(
        request,
        viewer,
        "agents/channel_remove.html",
        section="agents",
        agent=agent,
        channel=row,
        type_name=TYPE_NAMES.get(row.type, row.type),
    )


@router.post("/agents/{agent_id}/channels/{channel_id}/remove")
async def remove_channel(
    agent_id: str,
    channel_id: str,
    request: Request,
    viewer: SignedIn,
    principal: AgentsWrite,
    db: DbSession,
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    row = _channel(agent, channel_id)
    channels = [_kept(other) for other in agent.channels if other.id != row.id]
    await _apply(request, db, principal, agent, channels)
    return RedirectResponse(f"/agents/{agent.id}/channels?outcome=removed", status_code=303)
