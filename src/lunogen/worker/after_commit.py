"""Work that must wait for the outermost COMMIT: sending jobs, waking log followers.

`defer(session, kind, item)` files `item` with the transaction in progress (the innermost
SAVEPOINT if one is open). SQLAlchemy fires `after_commit` for a released SAVEPOINT too, so
the hooks here tell the two apart:

- a SAVEPOINT released: its items move to the enclosing transaction (another savepoint or the
  root) and wait there;
- a SAVEPOINT rolled back: its own items are dropped; what the enclosing transaction holds stays;
- the root transaction committed: every item goes to the handler registered for its kind;
- the root transaction ended any other way (rollback, close): everything is dropped.

Handlers run synchronously inside the commit, on the event loop's thread: they should only
schedule work (`loop.create_task`), never block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

log = structlog.get_logger(__name__)

Handler = Callable[[list[Any]], None]

_KEY = "lunogen_after_commit"
_handlers: dict[str, Handler] = {}

# session.info[_KEY]: transaction -> kind -> items, in the order they were deferred.
_Pending = dict[SessionTransaction, dict[str, list[Any]]]


def register(kind: str, handler: Handler) -> None:
    """Call `handler(items)` with the `kind` items of each transaction that commits."""
    _handlers[kind] = handler


def defer(session: AsyncSession | Session, kind: str, item: Any) -> None:
    """Hand `item` to the `kind` handler once the outermost transaction commits."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    if kind not in _handlers:
        raise KeyError(f"no after-commit handler registered for {kind!r}")
    transaction = sync.get_nested_transaction() or sync.get_transaction() or sync.begin()
    pending: _Pending = sync.info.setdefault(_KEY, {})
    pending.setdefault(transaction, {}).setdefault(kind, []).append(item)


def _enclosing(transaction: SessionTransaction) -> SessionTransaction | None:
    """The savepoint or root transaction that takes over a released savepoint's items."""
    parent = transaction.parent
    while parent is not None and not parent.nested and parent.parent is not None:
        parent = parent.parent  # an ORM-internal subtransaction (a flush): not a boundary
    return parent


def _merge(pending: _Pending, into: SessionTransaction, items: dict[str, list[Any]]) -> None:
    target = pending.setdefault(into, {})
    for kind, values in items.items():
        target.setdefault(kind, []).extend(values)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending: _Pending | None = session.info.get(_KEY)
    if not pending:
        return
    savepoint = session.get_nested_transaction()
    if savepoint is not None:  # RELEASE SAVEPOINT: nothing is durable yet
        items = pending.pop(savepoint, None)
        parent = _enclosing(savepoint)
        if items and parent is not None:
            _merge(pending, parent, items)
        return
    root = session.get_transaction()
    items = pending.pop(root, None) if root is not None else None
    for kind, values in (items or {}).items():
        try:
            _handlers[kind](values)
        except Exception:
            log.exception("after_commit_handler_failed", kind=kind, items=len(values))


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    """Whatever is still filed under an ending transaction was not committed: drop it."""
    pending: _Pending | None = session.info.get(_KEY)
    if not pending:
        return
    if transaction.parent is None:
        pending.clear()
    elif transaction.nested:
        pending.pop(transaction, None)
