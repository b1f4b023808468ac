"""Model calls a turn completed, kept so that a re-run after a crash does not pay for them twice.

A completed call is recorded (`RecordedCall`, keyed by the inbound message and the step) in the
transaction that stores its usage row and settles its hold: recorded ⇔ charged. A turn re-run
after its worker died reads the records of its message and, at each step whose request has the
same fingerprint, takes the recorded result instead of calling: no hold, no call, no charge.

The fingerprint covers what decides the call given the message: the model chain, the reply
budget, the agent's instructions, the tools offered and the model's own messages the turn added
(its tool calls). The history before the message and the message itself are fixed by the
message id. Left out, because they change between attempts without making it another question:
the system prompt's clock and memory notes, and what the tools answered. Tools run again on a
re-run, and many answer differently each time (`remember` names a new note id, `current_time`,
`web_fetch`, `run_code`): were their answers in the fingerprint, every step after a tool step
would be called and charged again after a crash. A step whose record is reused keeps the answer
the model gave to the first attempt's tool results; the steps after it see the re-run's.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.kit.crypto import KeyRing
from lunogen.llm.provider import ModelCallResult, ToolCall
from lunogen.llm.usage import Usage
from lunogen.runtime.models import RecordedCall


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Fingerprint:
    """The running fingerprint of a turn's requests; `feed` each message the turn appends (a
    tool result counts by its call id only, see the module's docstring)."""

    def __init__(
        self, *, chain: list[str], max_output_tokens: int, instructions: str, tools: Any
    ) -> None:
        self._hash = hashlib.sha256(_json([chain, max_output_tokens, instructions, tools]))

    def feed(self, message: dict[str, Any]) -> None:
        if message.get("role") == "tool":
            message = {"role": "tool", "tool_call_id": message.get("tool_call_id")}
        self._hash.update(_json(message))

    def of_step(self, *, tools_offered: bool) -> str:
        step = self._hash.copy()
        step.update(b"tools" if tools_offered else b"no tools")
        return step.hexdigest()


def charge_key(message_id: str, step: int, fingerprint: str) -> str:
    """The ledger key of a call's charge: the same call of the same message is charged once,
    whichever attempt (or racing worker) settles it."""
    return f"usage:{message_id}:{step}:{fingerprint[:16]}"


def encode(keyring: KeyRing, result: ModelCallResult) -> str:
    usage = result.usage
    return keyring.encrypt(
        json.dumps(
            {
                "requested_model": result.requested_model,
                "model": result.model,
                "generation_id": result.generation_id,
                "text": result.text,
                "tool_calls": [[c.id, c.name, c.arguments] for c in result.tool_calls],
                "finish_reason": result.finish_reason,
                "usage": [
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens,
                    usage.reasoning_tokens,
                    None if usage.cost is None else str(usage.cost),
                ],
                "latency_ms": result.latency_ms,
            }
        )
    )


def decode(keyring: KeyRing, token: str) -> ModelCallResult:
    data = json.loads(keyring.decrypt(token))
    prompt, completion, cached, reasoning, cost = data["usage"]
    return ModelCallResult(
        requested_model=data["requested_model"],
        model=data["model"],
        generation_id=data["generation_id"],
        text=data["text"],
        tool_calls=tuple(ToolCall(id=i, name=n, arguments=a) for i, n, a in data["tool_calls"]),
        finish_reason=data["finish_reason"],
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
            cost=None if cost is None else Decimal(cost),
        ),
        latency_ms=data["latency_ms"],
    )


async def load(session: AsyncSession, message_id: str) -> dict[int, RecordedCall]:
    rows = await session.execute(select(RecordedCall).where(RecordedCall.message_id == message_id))
    return {row.step: row for row in rows.scalars()}


async def record(
    session: AsyncSession,
    keyring: KeyRing,
    *,
    message_id: str,
    step: int,
    fingerprint: str,
    result: ModelCallResult,
    replaces: bool,
) -> None:
    """Add the record of a call; `replaces` drops a stale record of the step first (its request
    differed, so it was not reused)."""
    if replaces:
        await session.execute(
            delete(RecordedCall).where(
                RecordedCall.message_id == message_id, RecordedCall.step == step
            )
        )
    session.add(
        RecordedCall(
            message_id=message_id,
            step=step,
            fingerprint=fingerprint,
            result=encode(keyring, result),
        )
    )


async def forget(session: AsyncSession, message_id: str) -> None:
    """The message is answered (or failed for good): its calls will never be replayed."""
    await session.execute(delete(RecordedCall).where(RecordedCall.message_id == message_id))
