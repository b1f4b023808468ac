"""policy versions: the Terms and the Privacy Policy as versioned documents

`policy_versions` holds every published version (kind `terms` or `privacy`, version, text,
effective date, material, who published it, and the progress of the notice a material change
sends). The migration seeds version 2026-11-01 of both documents, in effect from 2026-11-01,
so the consents recorded before it (with that version) stay valid.

The seeded texts are embedded here, not read from `lunogen/privacy/texts/` when the migration
runs: a version's text is what people accepted, and must not change when the files are edited
for a later version (which is then published with `lunogen policy publish`).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)
_VERSION = "2026-11-01"
_EFFECTIVE = datetime(2026, 11, 1, tzinfo=UTC)

_TERMS = """\
# Terms of Service

These terms govern your use of this LunoGen installation, run by its operator ("we").

## Your account

- You must be 18 or older and give a real email address you can receive mail at.
- You are responsible for what happens under your account and its API keys; keep them secret and
  revoke a key you no longer trust.

## Your agents

- You decide what your agents say and do, and you are responsible for it towards the people they
  talk to and the channels they use (including WhatsApp's and Telegram's own rules).
- You must not use LunoGen to send spam, to harass, to deceive people about talking to a machine,
  to break the law, or to attack other systems. We may suspend an agent or account that does, and
  we tell you why; you can appeal through a support ticket.

## Credits and payment

- Model calls are paid from prepaid credits at the prices shown in the model catalog. Credits are
  bought through Stripe and do not expire while your account exists.
- When your balance cannot cover a model call, the call is not made and your agents pause until you
  top up.

## The service

- We run LunoGen with care but without a guarantee that it is always available or free of errors.
- You can close your account at any time; what happens to your data is in the Privacy Policy.
- When we change these terms materially we tell you before the change takes effect.
"""

_PRIVACY = """\
# Privacy Policy

This policy says what the operator of this LunoGen installation ("we") does with information about
you. Each promise carries a tag in brackets; the tests of the software that keep it are listed under
that tag in `docs/privacy.md`.

## Who may use LunoGen

- [age] You must be 18 or older to use LunoGen; we ask you to confirm it before your account can be
  used.

## What we collect

- [collect-account] For your account we keep your email address, your name, a hash of your password
  (never the password itself) and, if you sign in with Google, your Google account id and profile
  picture.
- [collect-content] For your agents we keep their settings, the messages they exchange with the
  people who write to them, the memory notes they keep per contact, their runtime logs, and the
  files in their workspaces.
- [collect-usage] For billing we keep every model call's tokens, model and cost, your credit
  transactions, and the id Stripe gives your payments; we never see or store card numbers.
- [collect-security] For security we keep, for each sign-in, session and sensitive change, the time,
  the IP address and the browser's user agent.

## How we use it

- [use-purpose] We use your data only to run the service for you: to answer your agents' contacts,
  to bill you, to keep your account secure, and to tell you about your account.
- [no-training] Conversations are stored only to give your agents memory; they are never used to
  train models, and model calls are routed only to providers that do not keep or train on them.

## Who we share it with

- [processors] We send data only to the services needed to run LunoGen: the model provider
  (OpenRouter or the OpenAI-compatible endpoint the operator configures) for your agents' model
  calls, Stripe for payments, Google when you choose to sign in with Google, the email server the
  operator configures, and the channels you connect to your agents (WhatsApp, Telegram, your own
  webhook URLs). We do not sell data or share it for advertising.

## How we protect it

- [security-secrets] Secrets you give us (channel tokens, webhook secrets) and message text are
  encrypted at rest.
- [security-access] Only you can see your agents and conversations; our staff see message content
  only when you grant access on a support ticket, for a limited time, and every such access is
  recorded.
- [security-audit] Sign-ins, key changes and other sensitive actions are recorded in a security log
  you can read in your dashboard.

## How long we keep it

- [retention-logs] Runtime logs are deleted after the retention period the operator sets (30 days
  unless changed).
- [retention-deletion] When you delete an agent or your account, it disappears at once and its data
  is purged within 30 days; until then you can cancel an account deletion by signing in.
- [retention-kept] After deletion we keep only the credit transactions and security records the
  law requires, with your identity replaced by a random id.

## Your rights

- [right-access] You can download everything we hold about you from Settings → Export.
- [right-deletion] You can delete any agent, conversation or memory note, and your whole account,
  from the dashboard or the API.
- [right-correction] You can correct your name and email in Settings, and ask us to correct
  anything else.
- [right-objection] You can object to any use of your data, or ask us a question about it, with a
  privacy request; we answer it and email you when its status changes.
- [right-withdraw] You can withdraw your consent at any time by closing your account.

## Cookies

- [cookies] We set only essential cookies: your session, its CSRF token, and a short-lived one
  during Google sign-in. There are no analytics or advertising cookies.

## Changes to this policy

- [changes] When we change this policy materially we tell every active user in the dashboard and by
  email before the change takes effect; your next sign-in after that date shows the new version,
  and continuing to use LunoGen records that you accepted it.
"""


def upgrade() -> None:
    table = op.create_table(
        "policy_versions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("effective_at", _WHEN, nullable=False),
        sa.Column("material", sa.Boolean(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("published_at", _WHEN, nullable=False),
        sa.Column("published_by", sa.String(36), nullable=True),
        sa.Column("notify_status", sa.String(20), nullable=False),
        sa.Column("notify_cursor", sa.String(36), nullable=True),
        sa.Column("notify_next_at", _WHEN, nullable=True),
        sa.Column("notified", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["published_by"],
            ["users.id"],
            name=op.f("fk_policy_versions_published_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_versions")),
        sa.UniqueConstraint("kind", "version", name=op.f("uq_policy_versions_kind_version")),
    )
    op.create_index(op.f("ix_policy_versions_published_by"), "policy_versions", ["published_by"])
    op.create_index(
        op.f("ix_policy_versions_notify_next_at"), "policy_versions", ["notify_next_at"]
    )
    assert table is not None
    op.bulk_insert(
        table,
        [
            {
                "id": f"policy-{kind}-{_VERSION}",
                "kind": kind,
                "version": _VERSION,
                "effective_at": _EFFECTIVE,
                "material": True,
                "text": text.strip(),
                "summary": "",
                "published_at": _EFFECTIVE,
                "published_by": None,
                "notify_status": "none",
                "notify_cursor": None,
                "notify_next_at": None,
                "notified": 0,
            }
            for kind, text in (("terms", _TERMS), ("privacy", _PRIVACY))
        ],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_policy_versions_notify_next_at"), table_name="policy_versions")
    op.drop_index(op.f("ix_policy_versions_published_by"), table_name="policy_versions")
    op.drop_table("policy_versions")
