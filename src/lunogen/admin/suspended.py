"""What a suspended account is told, wherever it knocks: the API's 403 and the dashboard's page.

Kept apart from `admin.suspension` (which stops agents and notifies) so that the authenticators
can import it without pulling in the agent lifecycle.
"""

from __future__ import annotations

from email.utils import parseaddr

from lunogen.account.models import User
from lunogen.config import Settings
from lunogen.errors import ForbiddenError


def appeal_contact(settings: Settings) -> str:
    """The address a suspended person writes to: their sessions cannot open a support ticket."""
    return settings.privacy_contact or parseaddr(settings.mail_from)[1] or settings.mail_from


def suspended_message(user: User) -> str:
    return f"Account suspended: {user.suspended_reason or 'no reason recorded'}"


class AccountSuspendedError(ForbiddenError):
    """Every session and API key of a suspended account is refused with this, reason included."""

    error = "Account suspended"

    def __init__(self, user: User, settings: Settings) -> None:
        contact = appeal_contact(settings)
        super().__init__(
            suspended_message(user),
            extra={
                "suspended_at": user.suspended_at.isoformat() if user.suspended_at else None,
                "appeal": f"To appeal, write to {contact} from this account's email address.",
            },
        )
