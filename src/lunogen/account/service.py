"""Accounts: registration, verification, password sign-in and reset, consent, roles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta

from pydantic import EmailStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.account.models import Consent, EmailToken, User
from lunogen.account.plans import limits_for
from lunogen.account.schemas import ConsentIn, MeOut, PlanLimitsOut, RegisterIn, UserOut
from lunogen.audit import service as audit
from lunogen.auth.passwords import hash_password, needs_rehash, password_problem, verify_password
from lunogen.config import Settings
from lunogen.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    LunogenError,
    NotFoundError,
    ValidationFailedError,
)
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import random_token, sha256_hex
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo
from lunogen.notification.email import queue_email
from lunogen.privacy import policy
from lunogen.privacy.policy import AGE_ATTESTATION_VERSION

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"


_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)


class InvalidCredentialsError(LunogenError):
    status_code = 401
    error = "Invalid credentials"


class InvalidTokenError(LunogenError):
    status_code = 400
    error = "Invalid or expired link"


def normalize_email(email: str) -> str:
    return email.strip().lower()


def setup_problem(user: User) -> str | None:
    """Why this account may not use the platform yet, or None when it may."""
    if user.email_verified_at is None:
        return "Verify your email address first: open the link we sent you"
    if user.age_attested_at is None or user.terms_version is None:
        return (
            "Confirm you are 18 or older and accept the current Terms and Privacy Policy "
            "(POST /api/v1/auth/consent, or sign in in a browser)"
        )
    due = policy.versions().due(user.terms_version, user.privacy_version)
    if due:
        titles = " and the ".join(policy.TITLES[kind] for kind in due)
        return (
            f"The {titles} changed: read and accept the new version at /onboarding in a "
            "browser (POST /api/v1/policies/accept). Calls with an API key record acceptance."
        )
    return None


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        plan=user.plan,
        email_verified=user.email_verified_at is not None,
        google_linked=user.google_sub is not None,
        picture_url=user.picture_url,
        setup_complete=setup_problem(user) is None,
        created_at=user.created_at,
    )


def me_out(user: User) -> MeOut:
    limits = limits_for(user.plan)
    return MeOut(
        **user_out(user).model_dump(),
        limits=PlanLimitsOut(
            api_keys=limits.api_keys,
            requests_per_minute=limits.requests_per_minute,
            agents=limits.agents,
            channels_per_agent=limits.channels_per_agent,
        ),
    )


async def find_by_email(session: AsyncSession, email: str) -> User | None:
    query = select(User).where(User.email == normalize_email(email), User.deleted_at.is_(None))
    return (await session.execute(query)).scalar_one_or_none()


def _before_transaction(session: AsyncSession) -> None:
    """Refuse to run argon2 (~0.2 s of CPU) while `session` holds a transaction: on SQLite a
    write transaction is the database's only write lock. The caller commits first."""
    if session.in_transaction():
        raise RuntimeError("password hashing must run before the session's transaction begins")


async def _lock_user(session: AsyncSession, user_id: str) -> User | None:
    """The account as committed now, its row locked until the transaction ends (PostgreSQL;
    on SQLite the transaction's write lock covers it)."""
    return await session.get(User, user_id, with_for_update=True, populate_existing=True)


def _check_consent(data: ConsentIn) -> None:
    missing = [
        field
        for field, given in (
            ("age_confirmed", data.age_confirmed),
            ("accept_terms", data.accept_terms),
            ("accept_privacy", data.accept_privacy),
        )
        if not given
    ]
    if missing:
        raise ValidationFailedError(
            "You must confirm you are 18 or older and accept the Terms and Privacy Policy",
            field=missing[0],
        )


def current_versions(now: datetime | None = None) -> tuple[str, str]:
    """The versions of the Terms and the Privacy Policy in effect (what consent accepts)."""
    snapshot = policy.versions()
    terms, privacy = snapshot.current("terms", now), snapshot.current("privacy", now)
    return (
        terms.version if terms else policy.BUNDLED_VERSION,
        privacy.version if privacy else policy.BUNDLED_VERSION,
    )


def record_consent(session: AsyncSession, *, user: User, client: ClientInfo) -> None:
    """The person accepts the versions in effect (and attests their age): one `consents` row
    each, with the time, IP and user agent."""
    now = utcnow()
    terms, privacy = current_versions(now)
    for document, version in (
        ("age_attestation", AGE_ATTESTATION_VERSION),
        ("terms", terms),
        ("privacy", privacy),
    ):
        session.add(
            Consent(
                user_id=user.id,
                document=document,
                version=version,
                accepted_at=now,
                ip=client.ip,
                user_agent=client.user_agent,
            )
        )
    user.age_attested_at = user.age_attested_at or now
    user.terms_version = terms
    user.privacy_version = privacy


def check_registration(data: RegisterIn) -> str:
    """Refuse a registration that can never succeed (consent, password); return its address."""
    _check_consent(data)
    email = normalize_email(data.email)
    problem = password_problem(data.password, email=email, name=data.name)
    if problem:
        raise ValidationFailedError(f"Password {problem}", field="password")
    return email


async def register(
    session: AsyncSession,
    *,
    data: RegisterIn,
    client: ClientInfo,
    settings: Settings,
    keyring: KeyRing,
    may_email_owner: Callable[[], Awaitable[bool]],
) -> User | None:
    """Create the account and email its verification link; None if the address is taken.

    For a taken address nothing is created and the owner is emailed instead (if
    `may_email_owner()` allows it), so the caller can answer exactly as for a new address.
    Call it before `session`'s transaction begins: the password is hashed first.
    """
    email = check_registration(data)
    _before_transaction(session)
    # Hash before looking the address up, so both paths spend the same argon2 time.
    password_hash = await hash_password(data.password)
    existing = await _any_user_with_email(session, email)
    if existing is not None:
        audit.record(
            session,
            action="account.registration_for_existing_address",
            actor_user_id=None,
            subject_user_id=existing.id,
            client=client,
            target_type="user",
            target_id=existing.id,
        )
        if existing.deleted_at is None and await may_email_owner():
            _send_already_registered(session, user=existing, settings=settings, keyring=keyring)
        return None
    user = User(email=email, name=data.name, password_hash=password_hash)
    session.add(user)
    await session.flush()
    record_consent(session, user=user, client=client)
    audit.record(
        session,
        action="account.registered",
        actor_user_id=user.id,
        client=client,
        target_type="user",
        target_id=user.id,
    )
    await send_verification(session, user=user, settings=settings, keyring=keyring)
    return user


async def _any_user_with_email(session: AsyncSession, email: str) -> User | None:
    """The account holding `email`, closed ones included (an address is never reused)."""
    query = select(User).where(User.email == normalize_email(email))
    return (await session.execute(query)).scalar_one_or_none()


def _send_already_registered(
    session: AsyncSession, *, user: User, settings: Settings, keyring: KeyRing
) -> None:
    queue_email(
        session,
        keyring,
        to=user.email,
        subject="Someone tried to register with your LunoGen address",
        body=(
            f"Hello {user.name},\n\nSomeone (perhaps you) tried to create a new LunoGen account "
            f"with this email address, which already has one. No new account was made.\n\n"
            f"To use your account, sign in at {settings.public_url}/login, or if you forgot "
            f"your password, reset it at {settings.public_url}/forgot.\n\n"
            "If it was not you, you can ignore this email: nothing about your account changed.\n"
        ),
    )


def valid_email(email: str) -> str:
    """`email` as registration and sign-in accept it (the API's own check), normalised."""
    try:
        checked = _EMAIL.validate_python(email)
    except PydanticValidationError as exc:
        reason = exc.errors()[0].get("ctx", {}).get("reason") or "not a valid email address"
        raise ValidationFailedError(
            f"{email!r} is not an email address sign-in accepts: {reason}", field="email"
        ) from None
    return normalize_email(checked)


async def create_user_admin(
    session: AsyncSession, *, email: str, name: str, password: str | None, role: str
) -> User:
    """The CLI's `user create`: active at once; attestation and consent at first sign-in.

    Call it before `session`'s transaction begins: the password is hashed first.
    """
    email = valid_email(email)
    if password is not None:
        problem = password_problem(password, email=email, name=name)
        if problem:
            raise ValidationFailedError(f"Password {problem}", field="password")
    _before_transaction(session)
    password_hash = await hash_password(password) if password else None
    if await _any_user_with_email(session, email) is not None:
        raise ConflictError(f"An account with email {email} already exists")
    user = User(
        email=email,
        name=name,
        password_hash=password_hash,
        email_verified_at=utcnow(),
        role=role,
    )
    session.add(user)
    await session.flush()
    audit.record(
        session,
        action="account.created_by_operator",
        actor_user_id=None,
        subject_user_id=user.id,
        target_type="user",
        target_id=user.id,
        details={"role": role},
    )
    return user


async def retire_tokens(session: AsyncSession, *, user_id: str, purposes: Iterable[str]) -> None:
    """Use up every outstanding link of the user for these purposes, so none of them works."""
    await session.execute(
        update(EmailToken)
        .where(
            EmailToken.user_id == user_id,
            EmailToken.purpose.in_(list(purposes)),
            EmailToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
    )


def issue_token(
    session: AsyncSession,
    *,
    user_id: str,
    purpose: str,
    expires_at: datetime,
    new_email: str | None = None,
) -> str:
    """A new emailed link's token; only its hash is stored."""
    token = random_token()
    session.add(
        EmailToken(
            user_id=user_id,
            purpose=purpose,
            token_hash=sha256_hex(token),
            expires_at=expires_at,
            new_email=new_email,
        )
    )
    return token


async def send_verification(
    session: AsyncSession, *, user: User, settings: Settings, keyring: KeyRing
) -> None:
    token = issue_token(
        session,
        user_id=user.id,
        purpose=VERIFY_EMAIL,
        expires_at=utcnow() + timedelta(hours=settings.email_token_hours),
    )
    link = f"{settings.public_url}/verify?token={token}"
    queue_email(
        session,
        keyring,
        to=user.email,
        subject="Verify your LunoGen email address",
        body=(
            f"Hello {user.name},\n\nConfirm your email address to activate your LunoGen "
            f"account:\n\n{link}\n\nThe link works once and expires in "
            f"{settings.email_token_hours} hours. If you did not sign up, ignore this email.\n"
        ),
    )


async def resend_verification(
    session: AsyncSession, *, email: str, settings: Settings, keyring: KeyRing
) -> None:
    user = await find_by_email(session, email)
    if user is not None and user.email_verified_at is None:
        await send_verification(session, user=user, settings=settings, keyring=keyring)


async def _valid_token(
    session: AsyncSession, *, token: str, purpose: str, lock: bool = False
) -> tuple[EmailToken, User]:
    """The unused, unexpired link token and its account; `lock` locks the token's row."""
    query = select(EmailToken).where(
        EmailToken.token_hash == sha256_hex(token), EmailToken.purpose == purpose
    )
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise InvalidTokenError("This link is invalid, already used or expired; ask for a new one")
    user = await session.get(User, row.user_id)
    if user is None or user.deleted_at is not None:
        raise InvalidTokenError("This link is invalid, already used or expired; ask for a new one")
    return row, user


async def _consume_token(session: AsyncSession, *, token: str, purpose: str) -> User:
    row, user = await _valid_token(session, token=token, purpose=purpose, lock=True)
    row.used_at = utcnow()
    return user


async def verify_email(session: AsyncSession, *, token: str, client: ClientInfo) -> User:
    user = await _consume_token(session, token=token, purpose=VERIFY_EMAIL)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        audit.record(
            session,
            action="account.email_verified",
            actor_user_id=user.id,
            client=client,
            target_type="user",
            target_id=user.id,
        )
    return user


async def authenticate_password(
    session: AsyncSession,
    *,
    reader: async_sessionmaker[AsyncSession],
    email: str,
    password: str,
    client: ClientInfo,
) -> User:
    """Check a password. On failure the audit row is added (the caller must still commit it).

    The account is read through `reader` (on SQLite: no write lock) and argon2 runs before
    `session`'s transaction begins; that transaction then locks the account and goes on only
    if its hash is still the one checked (a reset meanwhile wins).
    """
    _before_transaction(session)
    async with reader() as read:
        found = await find_by_email(read, email)
    checked_hash = found.password_hash if found else None
    # Always run argon2, so the answer time does not tell which addresses have accounts.
    password_ok = await verify_password(checked_hash, password)
    new_hash = None
    if password_ok and checked_hash and needs_rehash(checked_hash):
        new_hash = await hash_password(password)
    user = await _lock_user(session, found.id) if found else None
    if user is not None and (user.deleted_at is not None or user.password_hash != checked_hash):
        password_ok = False
    if user is None or not password_ok:
        audit.record(
            session,
            action="auth.sign_in_failed",
            actor_user_id=None,
            subject_user_id=user.id if user else None,
            client=client,
            details={"email": normalize_email(email)},
        )
        raise InvalidCredentialsError("Wrong email or password")
    if user.email_verified_at is None:
        raise ForbiddenError(
            "Verify your email address first: open the link we sent you, "
            "or ask for a new one at /api/v1/auth/verify/resend",
            error="Email not verified",
        )
    if new_hash is not None:
        user.password_hash = new_hash
    audit.record(
        session,
        action="auth.sign_in",
        actor_user_id=user.id,
        client=client,
        details={"method": "password"},
    )
    return user


async def give_consent(
    session: AsyncSession, *, user: User, data: ConsentIn, client: ClientInfo
) -> User:
    _check_consent(data)
    record_consent(session, user=user, client=client)
    audit.record(
        session,
        action="account.consent_given",
        actor_user_id=user.id,
        client=client,
        details={"terms": user.terms_version, "privacy": user.privacy_version},
    )
    return user


async def rename(
    session: AsyncSession, *, user: User, name: str, client: ClientInfo, key_id: str | None = None
) -> User:
    """Change the name the account shows (audited, old and new); nothing when it is the same."""
    if name == user.name:
        return user
    previous = user.name
    user.name = name
    audit.record(
        session,
        action="account.renamed",
        actor_user_id=user.id,
        actor_key_id=key_id,
        client=client,
        details={"from": previous, "to": name},
    )
    await session.flush()
    return user


async def request_password_reset(
    session: AsyncSession, *, email: str, settings: Settings, keyring: KeyRing
) -> None:
    """Always succeeds from the caller's view, so it reveals nothing about which emails exist."""
    user = await find_by_email(session, email)
    if user is None:
        return
    await retire_tokens(
        session, user_id=user.id, purposes=(RESET_PASSWORD,)
    )  # only the newest works
    token = issue_token(
        session,
        user_id=user.id,
        purpose=RESET_PASSWORD,
        expires_at=utcnow() + timedelta(minutes=settings.reset_token_minutes),
    )
    queue_email(
        session,
        keyring,
        to=user.email,
        subject="Reset your LunoGen password",
        body=(
            f"Hello {user.name},\n\nSomeone asked to reset your LunoGen password. To choose a "
            f"new one, open:\n\n{settings.public_url}/reset?token={token}\n\nThe link works "
            f"once and expires in {settings.reset_token_minutes} minutes. If it was not you, "
            "ignore this email: your password is unchanged.\n"
        ),
    )


async def reset_password(
    session: AsyncSession,
    *,
    reader: async_sessionmaker[AsyncSession],
    token: str,
    password: str,
    client: ClientInfo,
) -> User:
    """Set the password of the link's account. The link is checked through `reader` and the
    password hashed before `session`'s transaction begins; that transaction uses the link up."""
    from lunogen.auth.sessions import revoke_all_sessions

    _before_transaction(session)
    async with reader() as read:
        _, holder = await _valid_token(read, token=token, purpose=RESET_PASSWORD)
    problem = password_problem(password, email=holder.email, name=holder.name)
    if problem:
        raise ValidationFailedError(f"Password {problem}", field="password")
    password_hash = await hash_password(password)
    user = await _consume_token(session, token=token, purpose=RESET_PASSWORD)
    user.password_hash = password_hash
    # The reset proves control of the mailbox.
    user.email_verified_at = user.email_verified_at or utcnow()
    await retire_tokens(session, user_id=user.id, purposes=(RESET_PASSWORD,))
    await revoke_all_sessions(session, user_id=user.id)
    audit.record(session, action="account.password_reset", actor_user_id=user.id, client=client)
    return user


async def change_password(
    session: AsyncSession,
    *,
    user: User,
    current_password: str,
    new_password: str,
    client: ClientInfo,
    keep_session_id: str | None,
) -> None:
    """Call it before `session`'s transaction begins (commit the authenticator's first): argon2
    runs first; the transaction then goes on only if the hash checked is still the account's."""
    from lunogen.auth.sessions import revoke_all_sessions

    _before_transaction(session)
    checked_hash = user.password_hash
    if checked_hash and not await verify_password(checked_hash, current_password):
        raise BadRequestError("Your current password is wrong", error="Wrong current password")
    problem = password_problem(new_password, email=user.email, name=user.name)
    if problem:
        raise ValidationFailedError(f"Password {problem}", field="new_password")
    password_hash = await hash_password(new_password)
    current = await _lock_user(session, user.id)
    if current is None or current.deleted_at is not None or current.password_hash != checked_hash:
        raise ConflictError(
            "Your password was changed meanwhile (in another session or by a reset link); "
            "sign in again and retry",
            error="Password changed meanwhile",
        )
    current.password_hash = password_hash
    await retire_tokens(session, user_id=user.id, purposes=(RESET_PASSWORD,))
    await revoke_all_sessions(session, user_id=user.id, except_id=keep_session_id)
    audit.record(session, action="account.password_changed", actor_user_id=user.id, client=client)


async def list_users(
    session: AsyncSession, *, limit: int, offset: int, email: str | None = None
) -> tuple[list[User], int]:
    from sqlalchemy import func

    query = select(User).where(User.deleted_at.is_(None))
    if email:
        query = query.where(User.email.contains(normalize_email(email)))
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    rows = await session.execute(
        query.order_by(User.created_at, User.id).limit(limit).offset(offset)
    )
    return list(rows.scalars()), total


async def change_role_or_plan(
    session: AsyncSession,
    *,
    actor_id: str,
    actor_key_id: str | None,
    user_id: str,
    role: str | None,
    plan: str | None,
    client: ClientInfo,
) -> User:
    user = await session.get(User, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFoundError(error="User not found")
    if role is None and plan is None:
        raise BadRequestError("Give a role or a plan to change")
    if role is not None and role != user.role:
        if user.id == actor_id and role != "admin":
            raise ConflictError("You cannot remove your own admin role; ask another admin")
        audit.record(
            session,
            action="account.role_changed",
            actor_user_id=actor_id,
            actor_key_id=actor_key_id,
            subject_user_id=user.id,
            client=client,
            target_type="user",
            target_id=user.id,
            details={"from": user.role, "to": role},
        )
        user.role = role
    if plan is not None and plan != user.plan:
        audit.record(
            session,
            action="account.plan_changed",
            actor_user_id=actor_id,
            actor_key_id=actor_key_id,
            subject_user_id=user.id,
            client=client,
            target_type="user",
            target_id=user.id,
            details={"from": user.plan, "to": plan},
        )
        user.plan = plan
    return user
