"""The current versions of the documents a person accepts. Bump a version to ask again."""

from __future__ import annotations

TERMS_VERSION = "2026-11-01"
PRIVACY_VERSION = "2026-11-01"
AGE_ATTESTATION_VERSION = "18+"
MINIMUM_AGE = 18
