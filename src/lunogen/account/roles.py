from __future__ import annotations

from typing import Literal

Role = Literal["user", "support", "admin"]
ROLES: tuple[Role, ...] = ("user", "support", "admin")
