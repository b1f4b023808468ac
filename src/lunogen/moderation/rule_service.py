"""Managing the installation's rules (admins only; the caller commits). Each change is audited
and, once committed, this process's compiled rules are rebuilt (`hooks.rules_changed`)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.errors import ConflictError, NotFoundError, ValidationFailedError
from lunogen.moderation.hooks import rules_changed
from lunogen.moderation.models import ModerationRule
from lunogen.moderation.rules import pattern_problem

MAX_RULES = 1000


async def list_rules(session: AsyncSession) -> list[ModerationRule]:
    rows = await session.execute(
        select(ModerationRule).order_by(ModerationRule.created_at, ModerationRule.id)
    )
    return list(rows.scalars())


def value_problem(kind: str, value: str) -> str | None:
    """Why `value` cannot be a rule of `kind`, in words for the admin; None when it can."""
    if kind == "pattern":
        return pattern_problem(value)
    if not any(ch.isalnum() for ch in value):
        return "a term needs at least one letter or digit"
    return None


async def create_rule(
    session: AsyncSession,
    *,
    admin: Principal,
    kind: str,
    value: str,
    direction: str,
    action: str,
    note: str,
) -> ModerationRule:
    """A new rule (422 naming the problem with a pattern; 409 for a duplicate)."""
    problem = value_problem(kind, value)
    if problem:
        raise ValidationFailedError(f"value: {problem}", field="value")
    same = await session.execute(
        select(ModerationRule.id).where(
            ModerationRule.kind == kind,
            func.lower(ModerationRule.value) == value.lower(),
            ModerationRule.direction == direction,
        )
    )
    if same.first() is not None:
        raise ConflictError(f"The same {kind} is already a rule for {direction} messages")
    count = await session.execute(select(func.count()).select_from(ModerationRule))
    if int(count.scalar_one()) >= MAX_RULES:
        raise ConflictError(f"There are already {MAX_RULES} rules: delete some first")
    rule = ModerationRule(
        kind=kind,
        value=value,
        direction=direction,
        action=action,
        note=note,
        created_by=admin.user.id,
    )
    session.add(rule)
    await session.flush()
    audit.record(
        session,
        action="moderation.rule_created",
        actor_user_id=admin.user.id,
        actor_key_id=admin.key_id,
        client=admin.client,
        target_type="moderation_rule",
        target_id=rule.id,
        details={"kind": kind, "value": value, "direction": direction, "action": action},
    )
    rules_changed(session)
    return rule


async def delete_rule(session: AsyncSession, *, admin: Principal, rule_id: str) -> None:
    rule = await session.get(ModerationRule, rule_id) if len(rule_id) <= 36 else None
    if rule is None:
        raise NotFoundError(error="Rule not found")
    audit.record(
        session,
        action="moderation.rule_deleted",
        actor_user_id=admin.user.id,
        actor_key_id=admin.key_id,
        client=admin.client,
        target_type="moderation_rule",
        target_id=rule.id,
        details={"kind": rule.kind, "value": rule.value, "direction": rule.direction},
    )
    await session.delete(rule)
    await session.flush()
    rules_changed(session)
