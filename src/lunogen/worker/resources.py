"""What a job process builds once at start and closes at stop, provided by the domains.

A domain declares a typed `Resource` and registers how to open and close it when it is
imported (`lunogen.composition` imports them all): the model client (llm), the turn event bus
(runtime), the log wake-up bus (runlog). `JobProcess` opens every registered resource before
the broker starts and closes them in reverse order after it stops; jobs and periodic work read
them with `runtime().get(RESOURCE)`. The worker itself never imports the domains.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from lunogen.config import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Resource(Generic[T]):
    """The typed name of one resource: what `JobRuntime.get` returns for it is a `T`."""

    name: str


@dataclass(frozen=True)
class Provider:
    name: str
    open: Callable[[Settings, async_sessionmaker[AsyncSession]], Awaitable[Any]]
    close: Callable[[Any], Awaitable[None]] | None


_providers: dict[str, Provider] = {}


def provide(
    resource: Resource[T],
    *,
    open: Callable[[Settings, async_sessionmaker[AsyncSession]], Awaitable[T]],
    close: Callable[[T], Awaitable[None]] | None = None,
) -> None:
    """Open `resource` at every job process start with `open`, close it at stop with `close`."""
    _providers[resource.name] = Provider(resource.name, open, close)


def providers() -> list[Provider]:
    """The registered providers in registration order (the order they are opened)."""
    return list(_providers.values())
