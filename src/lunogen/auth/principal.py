"""Who is acting: the caller that services act for. No HTTP here, so services can import it;
the FastAPI dependencies that build it from a request are in `auth.dependencies`."""

from __future__ import annotations

from dataclasses import dataclass, field

from lunogen.account.models import User
from lunogen.auth.models import ApiKey, AuthSession
from lunogen.auth.scopes import Scope
from lunogen.kit.web import ClientInfo


@dataclass
class Principal:
    """Who is acting: a user, through either a developer key or a browser session."""

    user: User
    client: ClientInfo
    api_key: ApiKey | None = None
    auth_session: AuthSession | None = None
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({Scope.FULL.value}))

    @property
    def key_id(self) -> str | None:
        return self.api_key.id if self.api_key else None

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"
