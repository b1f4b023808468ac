"""One identity per mailbox, for "once per person" rules (the starter grant).

Accounts keep the address as typed (lowercased); only these rules fold aliases together:

- the whole address is lowercased (casefolded);
- a `+tag` is dropped from the local part for every domain (`ada+promo@example.com` is
  `ada@example.com`): most providers deliver sub-addresses to the same mailbox;
- for Gmail only, dots in the local part are dropped too, and `googlemail.com` is `gmail.com`
  (Gmail ignores dots; other providers do not, so `a.b@example.com` stays distinct).
"""

from __future__ import annotations

GMAIL = "gmail.com"
GMAIL_ALIASES = frozenset({"gmail.com", "googlemail.com"})


def mailbox_identity(email: str) -> str:
    local, _, domain = email.strip().casefold().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in GMAIL_ALIASES:
        local, domain = local.replace(".", ""), GMAIL
    return f"{local}@{domain}"
