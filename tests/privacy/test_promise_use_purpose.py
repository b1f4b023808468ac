"""[use-purpose] We use your data only to run the service for you: to answer your agents'
contacts, to bill you, to keep your account secure, and to tell you about your account.

What the code can show: every module that writes to a person (email or in-app notification)
is declared below with the account matter it tells about, and a new one fails until it is
declared; pages load nothing from another site (no analytics or advertising script can run);
and a person's data reaches only the services `test_promise_processors.py` lists.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "use-purpose"
SENTENCE = sentence(TAG)
SRC = Path(__file__).parents[2] / "src" / "lunogen"
_WRITES = re.compile(r"\b(queue_email|notify)\(")

# Each module that emails or notifies a person, and what about.
TELLS: dict[str, str] = {
    "account/service.py": "security: verification, password reset, a taken address",
    "admin/letters.py": "support: ticket replies, privacy request status",
    "admin/suspension.py": "the account or an agent suspended or reinstated, and why",
    "agent/lifecycle.py": "an agent stopped or failed",
    "billing/caps.py": "billing: a spend cap at 80 % or reached",
    "billing/credit_alerts.py": "billing: low credit",
    "billing/stripe_events.py": "billing: payments, refunds, the plan",
    "channel/service.py": "a channel failing to deliver",
    "notification/email.py": "(the email outbox itself)",
    "notification/service.py": "(the notification service itself)",
    "privacy/deletion.py": "the account's deletion and how to cancel it",
    "privacy/email_change.py": "confirming a change of email address",
    "privacy/export.py": "the data export is ready or failed",
    "privacy/policy_notice.py": "a material change of the Terms or Privacy Policy",
    "runtime/turn/store.py": "an agent's tool call waiting for the owner's approval",
}
# The acceptable-use checks (issue 14 point 8) tell the owner about flags and suspensions.
MODERATION_PACKAGE = "moderation/"


def test_every_module_that_writes_to_a_person_is_declared() -> None:
    writers = {
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if _WRITES.search(path.read_text(encoding="utf-8"))
    }
    undeclared = sorted(w for w in writers - TELLS.keys() if not w.startswith(MODERATION_PACKAGE))
    assert undeclared == [], "declare what these modules tell people about"
    assert sorted(TELLS.keys() - writers) == [], "declared modules that no longer write"


async def test_pages_load_nothing_from_another_site(api: Api) -> None:
    person = await api.sign_up()
    for path in ("/", "/login", "/register", "/privacy", "/home", "/settings", "/agents"):
        response = await person.client.get(path)
        csp = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if " " in d.strip())
        for name in ("default-src", "script-src", "connect-src", "img-src"):
            if name in directives:
                sources = directives[name].split()
                assert all(s.startswith("'") or s in ("data:", "blob:") for s in sources), (
                    path,
                    name,
                    sources,
                )
        assert not re.search(r"<script[^>]+src=\"https?://", response.text), path
