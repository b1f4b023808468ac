"""What a turn's model loop produced, for the transaction that stores it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lunogen.billing.caps import CapReached
from lunogen.billing.ledger import InsufficientCredits
from lunogen.llm.provider import ModelCallError, ModelCallResult
from lunogen.runlog.logs import Level
from lunogen.runtime.approvals import AskedCall
from lunogen.tool.registry import StagedWrites


@dataclass
class LogLine:
    event: str
    message: str
    level: Level = "info"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinalCall:
    """The turn's last call, paid for by `hold_id` and settled when the reply is stored."""

    step: int
    fingerprint: str
    hold_id: str
    result: ModelCallResult


@dataclass
class Work:
    """What the model loop produced; stored in one transaction at the end of the turn."""

    writes: StagedWrites
    log: list[LogLine] = field(default_factory=list)
    reply_text: str | None = None
    final: FinalCall | None = None  # to settle with the reply (None: replayed or no call)
    error: ModelCallError | None = None
    failure: str | None = None  # a reason the turn cannot be answered at all
    refused: InsufficientCredits | None = None  # the owner's credits cannot cover the next call
    capped: CapReached | None = None  # a spend cap stopped the turn: `reply_text` is its reply
    charged: int = 0  # micro-credits settled during the loop
    recorded: int = 0  # calls recorded during the loop (`store.settle_step`)
    # The turn stopped for the owner's approval of these calls (empty: of calls asked before).
    awaiting: list[AskedCall] | None = None
