"""Channel rows from typed configs: public fields as JSON, secret fields sealed with the key ring.

Secrets are a JSON object of the channel's secret fields, encrypted as one AES-GCM value in
`AgentChannel.secrets`. Plaintext exists only here, while sealing, and in the response that
reveals a generated secret once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from lunogen.agent.models import AgentChannel
from lunogen.channel.schemas import (
    INPUT_MODELS,
    OUTPUT_MODELS,
    ChannelInBase,
    ChannelOutBase,
    RevealedSecret,
    SecretState,
)
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id


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
        merged = {**stored, **supplied}
        generated = {
            name: make() for name, make in item.generated_secrets.items() if name not in merged
        }
        merged.update(generated)
        missing = [name for name in item.secret_fields if name not in merged]
        for name in missing:
            result.problems.append((f"{path}.{name}", "required for a new channel"))
        if missing:
            continue

        config = item.public_config()
        is_new = item.id is None
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
    values: dict[str, object] = {**row.config, "id": row.id, "type": row.type}
    for name in INPUT_MODELS[row.type].all_secret_fields():
        if revealed and name in revealed:
            values[name] = RevealedSecret(value=revealed[name])
        else:
            values[name] = SecretState(configured=row.secrets is not None)
    return OUTPUT_MODELS[row.type].model_validate(values)
