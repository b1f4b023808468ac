"""The channels' HTTP routes, collected here so that the app mounts them without naming any
channel: each module with routes publishes them (and the body caps they need) when imported,
and every channel type with an inbound route gets `/hooks/<type>/<channel id>` from the inbox."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from lunogen.channel.contract import registered_types
from lunogen.channel.inbox import inbound_router
from lunogen.kit.middleware import RouteBodyLimit

_routers: list[APIRouter] = []
_body_limits: list[RouteBodyLimit] = []


def publish(router: APIRouter, *, body_limits: Sequence[RouteBodyLimit] = ()) -> APIRouter:
    """Mount `router` in the app, with `body_limits` replacing the default cap on its routes."""
    _routers.append(router)
    _body_limits.extend(body_limits)
    return router


def routers() -> list[APIRouter]:
    return [inbound_router(), *_routers]


def body_limits() -> list[RouteBodyLimit]:
    inbound = [
        RouteBodyLimit("POST", f"/hooks/{kind.name}/{{channel_id}}", kind.max_inbound_bytes)
        for kind in registered_types().values()
        if kind.inbound_route
    ]
    return [*inbound, *_body_limits]
