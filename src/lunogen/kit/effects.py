"""What a service needs to carry out the side effects of a change: settings and the key ring.

A plain holder, so that any layer can take one without importing the agent lifecycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lunogen.config import Settings
    from lunogen.kit.crypto import KeyRing


@dataclass(frozen=True)
class Effects:
    settings: Settings
    keyring: KeyRing
