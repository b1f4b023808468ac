"""Step two of a turn: the model/tool loop, with no transaction open while the model thinks.

Each call is paid before it is made (a hold) and recorded with its charge right after it
returns (`store.settle_step`) when the turn goes on to run tools; the last call of a turn is
settled with the reply, in the transaction that stores it (`store.finish`), so a turn of one
call writes nothing between its start and its end. A call an earlier attempt recorded with the
same request is reused instead of made again (`runtime.recorded`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog

from lunogen.agent.workspace import edge_for
from lunogen.billing import caps as spend_caps
from lunogen.billing.caps import CapReached
from lunogen.billing.ledger import InsufficientCredits
from lunogen.kit.time import utcnow
from lunogen.llm.provider import ModelCallError, ModelCallResult, StreamDone, TextDelta
from lunogen.runtime import approvals, context, recorded
from lunogen.runtime.turn import store
from lunogen.runtime.turn.deps import (
    MAX_TOOL_STEPS,
    TOOL_RESULT_CHARS,
    TURN_TOKEN_CAP,
    TurnDeps,
)
from lunogen.runtime.turn.plan import Plan
from lunogen.runtime.turn.work import FinalCall, LogLine, Work
from lunogen.tool.registry import StagedWrites, ToolContext, ToolSpec

log = structlog.get_logger(__name__)


class ModelLoop:
    """One turn's calls and tool runs, from the plan's messages to a reply."""

    def __init__(self, deps: TurnDeps, plan: Plan) -> None:
        self.deps = deps
        self.plan = plan
        self.messages = list(plan.messages)
        self.tool_schemas = plan.tool_schemas()
        # Bounds of the prompt's tokens for the holds, kept up to date as the turn's messages
        # grow (each message is measured once).
        self.prompt_bound = plan.prompt_bound
        self.tools_bound = context.tools_token_bound(self.tool_schemas)
        self.fingerprint = recorded.Fingerprint(
            chain=plan.chain,
            max_output_tokens=plan.max_output_tokens,
            instructions=plan.instructions,
            tools=self.tool_schemas,
        )
        self.work = Work(writes=StagedWrites())

    @staticmethod
    def _last_step(step: int, tokens_used: int) -> bool:
        """The step whose answer is the reply, whatever it asks for."""
        return step == MAX_TOOL_STEPS or tokens_used >= TURN_TOKEN_CAP

    def _offers_tools(self, step: int, tokens_used: int) -> bool:
        return bool(self.tool_schemas) and not self._last_step(step, tokens_used)

    def first_hold(self) -> int | None:
        """Micro-credits to hold for the first call (placed by `store.start`), or None when an
        earlier attempt's record of that call will be reused."""
        if self.deps.model_client is None:
            return None
        tools = self._offers_tools(0, 0)
        if self._replayed(0, self.fingerprint.of_step(tools_offered=tools)) is not None:
            return None
        return store.hold_amount(
            self.deps, self.plan, self.prompt_bound + (self.tools_bound if tools else 0)
        )

    def turn_capped(self, amount: int, tokens_used: int) -> bool:
        """Whether the turn's own caps stop the next call (worst case `amount` micro-credits;
        `tokens_used` so far): if so, the turn ends with the cap's reply, unpaid.

        The credit cap counts what the turn's calls settled plus the next call's hold. The token
        cap counts the tokens the turn's calls reported plus the next call's reply budget
        (`max_output_tokens`): a prompt's tokens are only known once it is sent."""
        caps = self.plan.caps
        if caps is None:
            return False
        reached = None
        if caps.turn_micro is not None and self.work.charged + amount > caps.turn_micro:
            reached = CapReached(
                spend_caps.TURN_CREDITS,
                limit=caps.turn_micro,
                used=self.work.charged,
                required=amount,
            )
        budget = self.plan.max_output_tokens
        if caps.turn_tokens is not None and tokens_used + budget > caps.turn_tokens:
            reached = CapReached(
                spend_caps.TURN_TOKENS, limit=caps.turn_tokens, used=tokens_used, required=budget
            )
        if reached is None:
            return False
        self.capped(reached)
        return True

    def capped(self, reached: CapReached) -> None:
        """End the turn with the over-cap reply (stored and sent like any reply, unpaid)."""
        assert self.plan.caps is not None
        self.work.capped = reached
        self.work.reply_text = self.plan.caps.reply_text

    async def run(self, first_hold_id: str | None) -> Work:
        work = self.work
        if self.deps.model_client is None:
            work.failure = "no model provider is configured on this server"
            return work
        plan, deps = self.plan, self.deps
        edge, sandbox_problem = edge_for(deps.settings) if plan.sandbox_limits else (None, None)
        tool_ctx = ToolContext(
            agent_id=plan.agent_id,
            owner_id=plan.owner_id,
            contact=plan.contact,
            allow_private_urls=deps.allow_private_urls,
            sessionmaker=deps.sessionmaker,
            writes=work.writes,
            keyring=deps.keyring,
            edge=edge,
            sandbox_limits=plan.sandbox_limits,
            sandbox_problem=sandbox_problem,
            skills=plan.skills,
        )
        tokens_used = 0
        hold_id = first_hold_id
        for step in range(MAX_TOOL_STEPS + 1):
            last_step = self._last_step(step, tokens_used)
            tools = self.tool_schemas if self._offers_tools(step, tokens_used) else None
            step_print = self.fingerprint.of_step(tools_offered=tools is not None)
            result = self._replayed(step, step_print)
            replayed = result is not None
            if result is None:
                if hold_id is None:
                    prompt_tokens = self.prompt_bound + (self.tools_bound if tools else 0)
                    amount = store.hold_amount(deps, plan, prompt_tokens)
                    if self.turn_capped(amount, tokens_used):
                        return work
                    try:
                        hold_id = await store.reserve(
                            deps, plan, prompt_tokens=prompt_tokens, step=step
                        )
                    except InsufficientCredits as refused:
                        work.refused = refused
                        return work
                    except CapReached as reached:
                        self.capped(reached)
                        return work
                try:
                    result = await self._call(tools)
                except ModelCallError as error:
                    capped = plan.caps is not None and plan.caps.tracked
                    await store.release_hold(deps, hold_id, capped=capped)
                    work.error = error
                    work.log.append(
                        LogLine(
                            "model.failed",
                            str(error),
                            "error",
                            {
                                "code": error.code,
                                "status": error.status,
                                "message_id": plan.inbound_id,
                            },
                        )
                    )
                    return work
            tokens_used += result.usage.prompt_tokens + result.usage.completion_tokens
            work.log.append(_call_line(result, replayed))
            last = not result.tool_calls or last_step
            if not replayed and hold_id is not None:
                if last:
                    work.final = FinalCall(step, step_print, hold_id, result)
                else:
                    result, charged = await store.settle_step(
                        deps,
                        plan,
                        step=step,
                        fingerprint=step_print,
                        hold_id=hold_id,
                        result=result,
                    )
                    work.charged += charged
                    work.recorded += 1
            hold_id = None
            if last:
                work.reply_text = result.text
                return work
            if self._must_wait(step, result):
                return work
            await self._run_tools(result, tool_ctx)
        raise AssertionError("unreachable: the last step never offers tools")

    def _replayed(self, step: int, fingerprint: str) -> ModelCallResult | None:
        """The call an earlier attempt made and paid for at this step, if it asked the same."""
        found = self.plan.recorded.get(step)
        if found is None or found[0] != fingerprint:
            return None
        return recorded.decode(self.deps.keyring, found[1])

    def _must_wait(self, step: int, result: ModelCallResult) -> bool:
        """Whether a gated call of this step has no decision yet: the turn then stops, its
        calls so far recorded, and asks the owner (`store.finish`). The owner's answer, or
        the request's expiry, makes the message due again."""
        plan, now = self.plan, utcnow()
        asked: list[approvals.AskedCall] = []
        waiting = False
        for call in result.tool_calls:
            if call.name not in plan.gated:
                continue
            decision = plan.decisions.get(call.id)
            if decision is None:
                asked.append(approvals.AskedCall(step, call.id, call.name, call.arguments))
            elif decision.status == "pending" and decision.expires_at > now:
                waiting = True
        if asked or waiting:
            self.work.awaiting = asked
            self.work.log.append(
                LogLine(
                    "approval.waiting",
                    f"Waiting for the owner's decision on {len(asked) or 'earlier'} call(s)",
                    details={"message_id": plan.inbound_id, "tools": [c.tool_name for c in asked]},
                )
            )
            return True
        return False

    async def _gated_output(
        self, name: str, call_id: str, raw_args: str, tool_ctx: ToolContext
    ) -> str:
        """The output of an approved call, run here only if no other turn ran it; or why it
        was not run."""
        decision = self.plan.decisions[call_id]
        action, value = await approvals.claim(self.deps.sessionmaker, decision, self.deps.keyring)
        if action == "run":
            output = await run_tool(self.plan.tools.get(name), name, raw_args, tool_ctx)
            await approvals.record_output(
                self.deps.sessionmaker, self.deps.keyring, decision.id, output
            )
            return output
        if action == "reuse":
            return value or ""
        if action == "refused":
            why = "denied it" if value == "denied" else "did not approve it in time"
            return f"Error: the call to {name} was not run: the owner {why}."
        return (
            f"Error: the approved call to {name} was started by an attempt that stopped before "
            "it ended; whether it took effect is unknown."
        )

    async def _run_tools(self, result: ModelCallResult, tool_ctx: ToolContext) -> None:
        asked = result.assistant_message()
        self._append(asked)
        for call in result.tool_calls:
            await self._publish("tool", {"name": call.name, "status": "started"})
            spec = self.plan.tools.get(call.name)
            if call.name in self.plan.gated:
                output = await self._gated_output(call.name, call.id, call.arguments, tool_ctx)
            else:
                output = await run_tool(spec, call.name, call.arguments, tool_ctx)
            failed = output.startswith("Error:")
            status = "failed" if failed else "ok"
            await self._publish("tool", {"name": call.name, "status": status})
            self.work.log.append(
                LogLine(
                    "tool.call",
                    f"{call.name}: {status}",
                    "warning" if failed else "info",
                    {"tool": call.name, "chars": len(output), "error": failed},
                )
            )
            self._append({"role": "tool", "tool_call_id": call.id, "content": output})

    def _append(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.fingerprint.feed(message)
        self.prompt_bound += context.message_token_bound(message)

    async def _call(self, tools: list[dict[str, Any]] | None) -> ModelCallResult:
        client = self.deps.model_client
        assert client is not None
        plan = self.plan
        arguments: dict[str, Any] = {
            "model": plan.model,
            "fallback_models": plan.fallback_models,
            "messages": self.messages,
            "tools": tools,
            "max_tokens": plan.max_output_tokens,
        }
        if not (plan.stream and self.deps.events is not None):
            return await client.complete(**arguments)
        async for event in client.stream(**arguments):
            if isinstance(event, TextDelta) and event.text:
                await self._publish("delta", {"text": event.text})
            elif isinstance(event, StreamDone):
                return event.result
        raise ModelCallError("The stream ended without a result", code="bad_response")

    async def _publish(self, event: str, data: dict[str, Any]) -> None:
        if self.plan.stream and self.deps.events is not None:
            await self.deps.events.publish(self.plan.inbound_id, event, data)


def _call_line(result: ModelCallResult, replayed: bool) -> LogLine:
    return LogLine(
        "model.call",
        f"{result.model}: {result.usage.prompt_tokens} in, "
        f"{result.usage.completion_tokens} out, {result.latency_ms} ms",
        details={
            "model": result.model,
            "generation_id": result.generation_id,
            "finish_reason": result.finish_reason,
            "tool_calls": [c.name for c in result.tool_calls],
            "replayed": replayed,  # recorded by an attempt that died: not paid again
        },
    )


async def run_tool(spec: ToolSpec | None, name: str, raw_args: str, ctx: ToolContext) -> str:
    if spec is None:
        return f"Error: the tool {name!r} is not enabled for this agent."
    try:
        args = json.loads(raw_args or "{}")
        if not isinstance(args, dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as exc:
        return f"Error: invalid arguments for {name}: {exc}"
    try:
        result = await asyncio.wait_for(spec.run(ctx, args), timeout=spec.timeout_seconds)
    except TimeoutError:
        return f"Error: the tool {name} took longer than {spec.timeout_seconds:g} s."
    except Exception as exc:  # a tool failure goes to the model, never ends the turn
        log.warning("tool_failed", tool=name, error=repr(exc))
        return f"Error: the tool {name} failed: {type(exc).__name__}: {exc}"
    if len(result) > TOOL_RESULT_CHARS:
        result = result[:TOOL_RESULT_CHARS] + "\n[… truncated]"
    return result
