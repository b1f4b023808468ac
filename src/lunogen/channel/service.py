"""Channel rows from typed configs: public fields as JSON, secret fields sealed with the key ring.

Secrets are a JSON object of the channel's secret fields, encrypted as one AES-GCM value in
`AgentChannel.secrets`. Plaintext exists only here, while sealing, and in the response that
reveals a generated secret once.

A channel is disabled (`disabled_at`, `disabled_reason`) when its receiver says it is gone (a
webhook callback answered 410): nothing is sent or accepted on it until the owner re-enables it
(`enable_channel`) or gives it a new `callback_url`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.agent.models import Agent, AgentChannel
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.channel.contract import ChannelView
from lunogen.channel.schemas import (
    INPUT_MODELS,
    OUTPUT_MODELS,
    ChannelInBase,
    ChannelOutBase,
    RevealedSecret,
    SecretState,
)
from lunogen.kit.crypto import KeyRing
from lunogen.kit.effects import Effects
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.notification.service import notify
from lunogen.runlog.logs import log_event


@dataclass
class ChannelChanges:
    """The channel list after applying a request, and what changed (ids only, never values)."""

    rows: list[AgentChannel] = field(default_factory=list)
    revealed: dict[str, dict[str, str]] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def view_of(row: AgentChannel, *, agent_name: str, keyring: KeyRing) -> ChannelView:
    """The channel as channel types see it, secrets decrypted."""
    return ChannelView(
        id=row.id,
        agent_id=row.agent_id,
        agent_name=agent_name,
        type=row.type,
        config=dict(row.config),
        secrets=read_secrets(row, keyring),
        registration=dict(row.registration or {}),
    )


async def tell_owner(
    session: AsyncSession,
    effects: Effects,
    *,
    agent_id: str,
    kind: str,
    title: str,
    body: str,
    dedupe_key: str,
) -> None:
    """Notify the agent's owner (in the caller's transaction), once per `dedupe_key`.

    `{agent}` in `title` and `body` becomes the agent's name (`{agent!r}` quoted); nothing else
    is interpreted, so a provider's message with braces in it is shown as it came."""
    agent = await session.get(Agent, agent_id)
    owner = None if agent is None else await session.get(User, agent.owner_id)
    if agent is None or owner is None:
        return

    def named(text: str) -> str:
        return text.replace("{agent!r}", repr(agent.name)).replace("{agent}", agent.name)

    await notify(
        session,
        user=owner,
        kind=kind,
        title=named(title),
        body=named(body),
        dedupe_key=dedupe_key,
        agent_id=agent_id,
        settings=effects.settings,
        keyring=effects.keyring,
    )


def read_secrets(row: AgentChannel, keyring: KeyRing) -> dict[str, str]:
    """Decrypt a channel's secrets (for the runtime and channel senders; never for responses)."""
    if row.secrets is None:
        return {}
    value = json.loads(keyring.decrypt(row.secrets))
    return {str(k): str(v) for k, v in value.items()}


def apply_channels(
    inputs: Sequence[ChannelInBase], *, existing: list[AgentChannel], keyring: KeyRing
) -> ChannelChanges:
    """Build the new channel list from `inputs`; an input with an `id` edits that channel.

    Secret fields an edited channel omits keep their stored values; the platform's generated
    secrets are made once, when a channel is added. Problems are collected, not raised, so the
    caller can report them together with its own.
    """
    result = ChannelChanges()
    by_id = {row.id: row for row in existing}
    seen: set[str] = set()
    for index, item in enumerate(inputs):
        path = f"channels.{index}"
        if item.id is not None:
            row = by_id.get(item.id)
            if row is None:
                result.problems.append((f"{path}.id", f"unknown channel id '{item.id}'"))
                continue
            if item.id in seen:
                result.problems.append((f"{path}.id", f"channel '{item.id}' is listed twice"))
                continue
            if row.type != item.type:
                result.problems.append(
                    (
                        f"{path}.type",
                        f"channel '{row.id}' is a {row.type} channel; its type cannot change "
                        "(remove it and add a new one)",
                    )
                )
                continue
            seen.add(item.id)
            stored = read_secrets(row, keyring)
        else:
            row = AgentChannel(id=new_id(), type=item.type, config={}, secrets=None)
            stored = {}

        supplied = item.supplied_secrets()
        supplied_changed = any(stored.get(name) != value for name, value in supplied.items())
        merged = {**stored, **supplied}
        generated = {
            name: make() for name, make in item.generated_secrets.items() if name not in merged
        }
        merged.update(generated)
        missing = [name for name in item.secret_fields if name not in merged]
        if item.id is not None and not stored:
            missing = []  # kept without secrets (imported from an agent file): stays disabled
        for name in missing:
            result.problems.append((f"{path}.{name}", "required for a new channel"))
        if missing:
            continue

        config = item.public_config()
        is_new = item.id is None
        if not is_new and (
            row.config.get("callback_url") != config.get("callback_url") or supplied_changed
        ):
            # A new receiver or new credentials: why it was disabled says nothing about them.
            row.disabled_at = None
            row.disabled_reason = None
        changed = is_new or row.config != config or row.position != index or merged != stored
        row.config = config
        row.position = index
        if merged != stored:
            row.secrets = keyring.encrypt(json.dumps(merged)) if merged else None
        revealed = {name: v for name, v in generated.items() if name in item.reveal_once}
        if revealed:
            result.revealed[row.id] = revealed
        if is_new:
            result.added.append(row.id)
        elif changed:
            result.updated.append(row.id)
        result.rows.append(row)
    result.removed = [row.id for row in existing if row.id not in seen]
    return result


def render_channel(row: AgentChannel, revealed: dict[str, str] | None = None) -> ChannelOutBase:
    """A channel as the API shows it: public fields, and each secret as `{configured: true}`."""
    values: dict[str, object] = {
        **row.config,
        "id": row.id,
        "type": row.type,
        "disabled_at": row.disabled_at,
        "disabled_reason": row.disabled_reason,
        "registered_at": row.registered_at,
        "registration": row.registration,
    }
    for name in INPUT_MODELS[row.type].all_secret_fields():
        if revealed and name in revealed:
            values[name] = RevealedSecret(value=revealed[name])
        else:
            values[name] = SecretState(configured=row.secrets is not None)
    return OUTPUT_MODELS[row.type].model_validate(values)


def enable_path(*, agent_id: str, channel_id: str) -> str:
    return f"/api/v1/agents/{agent_id}/channels/{channel_id}/enable"


async def disable_channel(
    session: AsyncSession, *, agent_id: str, channel_id: str, reason: str
) -> datetime | None:
    """Disable the channel in the caller's transaction; None if it was already disabled.

    A conditional UPDATE, so that concurrent 410s disable (and log) it once.
    """
    now = utcnow()
    disabled = (
        await session.execute(
            update(AgentChannel)
            .where(AgentChannel.id == channel_id, AgentChannel.disabled_at.is_(None))
            .values(disabled_at=now, disabled_reason=reason[:2000])
            .returning(AgentChannel.id)
        )
    ).first()
    if disabled is None:
        return None
    log_event(
        session,
        agent_id=agent_id,
        event="channel.disabled",
        level="warning",
        message=f"Channel {channel_id} disabled: {reason}. Nothing is sent or accepted on it "
        f"until it is re-enabled (POST {enable_path(agent_id=agent_id, channel_id=channel_id)}) "
        "or given new settings (a new callback URL or new credentials).",
        details={"channel_id": channel_id, "reason": reason[:2000]},
    )
    return now


def enable_channel(
    session: AsyncSession, *, principal: Principal, agent: Agent, channel: AgentChannel
) -> bool:
    """Clear a channel's disabled state (logged and audited); False if it was not disabled."""
    if channel.disabled_at is None:
        return False
    reason = channel.disabled_reason
    channel.disabled_at = None
    channel.disabled_reason = None
    log_event(
        session,
        agent_id=agent.id,
        event="channel.enabled",
        message=f"Channel {channel.id} enabled again",
        details={"channel_id": channel.id},
    )
    audit.record(
        session,
        action="agent.channel_enabled",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent.id,
        details={"channel_id": channel.id, "type": channel.type, "disabled_reason": reason},
    )
    return True
