"""Sign-up, sign-in and account security. Each endpoint takes JSON or an HTML form post."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response

from lunogen.account import service as accounts
from lunogen.account.schemas import (
    ConsentIn,
    EmailIn,
    LoginIn,
    MeOut,
    MessageOut,
    PasswordChangeIn,
    PasswordResetIn,
    RegisterIn,
    TokenIn,
    UserOut,
)
from lunogen.audit import service as audit
from lunogen.auth.dependencies import SetupFullAccess, SetupUser, SignOutUser
from lunogen.auth.ratelimit import Backoff, RateLimiter
from lunogen.auth.sessions import (
    CSRF_COOKIE,
    clear_session_cookies,
    create_session,
    csrf_matches,
    revoke_all_sessions,
    revoke_session,
    set_session_cookies,
)
from lunogen.billing.grants import grant_starter_credits
from lunogen.config import Settings
from lunogen.dashboard.render import render
from lunogen.db import DbSession, read_sessionmaker
from lunogen.errors import (
    ForbiddenError,
    LunogenError,
    TooManyRequestsError,
    error_responses,
    validation_details,
)
from lunogen.kit.forms import body_doc, is_form, parse_body
from lunogen.kit.web import ClientInfo, is_json_media_type

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


async def _form_or_json(
    request: Request,
    db: AsyncSession,
    page: str,
    action: Callable[[], Awaitable[Response]],
    **page_context: Any,
) -> Response:
    """Run `action`; for a browser form, show errors on `page` instead of as JSON.

    A failed form post is rolled back like a failed JSON call (e.g. a reset link is not used
    up by a too-weak password); the page is rendered first, while the ORM objects are loaded.
    """
    if not is_form(request):
        return await action()
    try:
        return await action()
    except LunogenError as exc:
        message = exc.message or exc.error
        response = render(request, page, status_code=exc.status_code, error=message, **page_context)
        response.headers.update(exc.headers)
    except RequestValidationError as exc:
        details = validation_details(list(exc.errors()))
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        response = render(request, page, status_code=422, error=message, **page_context)
    await db.rollback()
    return response


def _is_json(request: Request) -> bool:
    return is_json_media_type(request.headers.get("content-type", ""))


async def _check_anonymous_csrf(request: Request) -> None:
    """Anonymous posts: a form must echo the `lg_csrf` cookie (double submit); else JSON only.

    Another site can post `text/plain` or a typeless body without a CORS preflight; were such a
    body read as JSON, a hostile page could sign its visitor in to the attacker's account.
    """
    if not is_form(request):
        if not _is_json(request) and await request.body():
            raise LunogenError(
                "Send the body as application/json (or as an HTML form from our pages)",
                error="Unsupported media type",
                status_code=415,
            )
        return
    form = await request.form()
    presented = form.get("csrf_token")
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not isinstance(presented, str) or not csrf_matches(cookie, presented):
        raise ForbiddenError("CSRF token missing or invalid: reload the page and try again")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _reader(request: Request) -> async_sessionmaker[AsyncSession]:
    """Sessions that only read (on SQLite they take no write lock), for work before argon2."""
    return read_sessionmaker(request.app.state.sessionmaker)


def _policy_context(request: Request) -> dict[str, Any]:
    """What the register and onboarding pages show besides an error."""
    terms_version, privacy_version = accounts.current_versions()
    return {
        "google": _settings(request).google_enabled,
        "terms_version": terms_version,
        "privacy_version": privacy_version,
    }


def _registration_sent(email: str) -> str:
    """The answer to every accepted registration, whether or not the address had an account."""
    return (
        f"We sent an email to {email}. Open the link in it to continue; if it does not arrive, "
        "check your spam folder."
    )


async def _registration_throttle(request: Request) -> None:
    """Registrations per client IP (every accepted attempt counts, new address or not)."""
    settings = _settings(request)
    limiter: RateLimiter = request.app.state.rate_limiter
    ip = ClientInfo.from_request(request).ip or "unknown"
    status = await limiter.hit_window(
        f"register-ip:{ip}", settings.registrations_per_ip_per_hour, 3600
    )
    if not status.allowed:
        raise TooManyRequestsError(
            f"Too many sign-ups from your network; try again in {status.retry_after} s",
            headers={"Retry-After": str(status.retry_after)},
            extra={"retry_after": status.retry_after},
        )


@router.post(
    "/register",
    status_code=201,
    response_model=MessageOut,
    responses=error_responses(429),
    openapi_extra=body_doc(RegisterIn),
)
async def register(request: Request, db: DbSession) -> Response:
    """Create an account; a verification link is emailed, and sign-in works once it is opened.

    The answer is the same whether or not the address already has an account (its owner is
    emailed instead), so it reveals nothing about which addresses are registered.
    """

    async def action() -> Response:
        await _check_anonymous_csrf(request)
        data = await parse_body(request, RegisterIn)
        email = accounts.check_registration(data)
        await _registration_throttle(request)
        await accounts.register(
            db,
            data=data,
            client=ClientInfo.from_request(request),
            settings=_settings(request),
            keyring=request.app.state.keyring,
            may_email_owner=lambda: _within_email_budget(request, email),
        )
        message = _registration_sent(email)
        if is_form(request):
            return render(
                request,
                "message.html",
                status_code=201,
                title="Check your inbox",
                message=message,
            )
        return JSONResponse({"message": message}, status_code=201)

    return await _form_or_json(request, db, "register.html", action, **_policy_context(request))


@router.post("/verify", response_model=UserOut, openapi_extra=body_doc(TokenIn))
async def verify_email(request: Request, db: DbSession) -> Response:
    """Confirm an email address with the single-use token from the verification link."""

    async def action() -> Response:
        await _check_anonymous_csrf(request)
        data = await parse_body(request, TokenIn)
        user = await accounts.verify_email(
            db, token=data.token, client=ClientInfo.from_request(request)
        )
        starter = request.app.state.settings.starter_credits
        await grant_starter_credits(db, user=user, credits=starter)
        if is_form(request):
            return render(
                request,
                "message.html",
                title="Email verified",
                message="Your email is verified. You can sign in now.",
                link="/login",
                link_text="Sign in",
            )
        return JSONResponse(accounts.user_out(user).model_dump(mode="json"))

    token = request.query_params.get("token", "")
    return await _form_or_json(request, db, "verify.html", action, token=token)


@router.post(
    "/verify/resend", status_code=202, response_model=MessageOut, openapi_extra=body_doc(EmailIn)
)
async def resend_verification(request: Request, db: DbSession) -> Response:
    """Email a new verification link if the address has an unverified account."""
    await _check_anonymous_csrf(request)
    data = await parse_body(request, EmailIn)
    if await _within_email_budget(request, data.email):
        await accounts.resend_verification(
            db, email=data.email, settings=_settings(request), keyring=request.app.state.keyring
        )
    return JSONResponse(
        {"message": "If that address has an unverified account, a new link is on its way."},
        status_code=202,
    )


EMAILS_PER_ADDRESS_PER_HOUR = 3


async def _within_email_budget(request: Request, email: str) -> bool:
    """Cap link emails per address, so the endpoints cannot be used to flood an inbox.

    Over the cap the answer stays the same (202), so it reveals nothing either.
    """
    limiter: RateLimiter = request.app.state.rate_limiter
    key = f"link-mail:{accounts.normalize_email(email)}"
    return await limiter.allow(key, EMAILS_PER_ADDRESS_PER_HOUR, 3600)


LOGIN_IP_FACTOR = 10  # one IP gets ten times an address's failures, across addresses


def _sign_in_budgets(request: Request, email: str) -> list[tuple[str, Backoff]]:
    """The failure budgets a password sign-in spends: per (address, client IP), and per IP.

    Nothing is counted per address alone, so failures from elsewhere never lock the owner out.
    """
    settings = _settings(request)
    backoff = Backoff(settings.login_failures_per_window, settings.login_failure_window_seconds)
    ip = ClientInfo.from_request(request).ip or "unknown"
    return [
        (f"login:{ip}:{accounts.normalize_email(email)}", backoff),
        (f"login-ip:{ip}", backoff.scaled(LOGIN_IP_FACTOR)),
    ]


async def _sign_in_throttle(limiter: RateLimiter, budgets: list[tuple[str, Backoff]]) -> None:
    waits = [await limiter.failure_wait(key, backoff) for key, backoff in budgets]
    wait = max((w for w in waits if w is not None), default=None)
    if wait is not None:
        raise TooManyRequestsError(
            f"Too many failed sign-ins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
            extra={"retry_after": wait},
        )


@router.post(
    "/login",
    response_model=MeOut,
    responses=error_responses(401, 429),
    openapi_extra=body_doc(LoginIn),
)
async def sign_in(request: Request, db: DbSession) -> Response:
    """Sign in with email and password; sets the `lg_session` and `lg_csrf` cookies."""

    async def action() -> Response:
        await _check_anonymous_csrf(request)
        data = await parse_body(request, LoginIn)
        limiter: RateLimiter = request.app.state.rate_limiter
        budgets = _sign_in_budgets(request, data.email)
        await _sign_in_throttle(limiter, budgets)
        settings = _settings(request)
        client = ClientInfo.from_request(request)
        try:
            user = await accounts.authenticate_password(
                db, reader=_reader(request), email=data.email, password=data.password, client=client
            )
        except accounts.InvalidCredentialsError:
            for key, backoff in budgets:
                await limiter.record_failure(key, backoff)
            await db.commit()  # keep the audit row of the failure
            raise
        # The right password clears this address's count from this IP (never the IP's own:
        # signing in to one's own account must not reset a sprayer's budget).
        pair_key, pair_backoff = budgets[0]
        await limiter.clear_failures(pair_key, pair_backoff)
        row, token = await create_session(db, user=user, client=client, settings=settings)
        if is_form(request):
            target = (
                (data.next or "/home") if accounts.setup_problem(user) is None else "/onboarding"
            )
            response: Response = RedirectResponse(target, status_code=303)
        else:
            response = JSONResponse(accounts.me_out(user).model_dump(mode="json"))
        set_session_cookies(response, token=token, csrf_token=row.csrf_token, settings=settings)
        return response

    google = _settings(request).google_enabled
    return await _form_or_json(request, db, "login.html", action, google=google)


@router.post("/logout", status_code=204)
async def sign_out(request: Request, principal: SignOutUser, db: DbSession) -> Response:
    """End this browser session (with a key: nothing to end, use DELETE /api/v1/keys)."""
    if principal.auth_session is not None:
        await revoke_session(db, principal.auth_session)
        audit.record(
            db, action="auth.sign_out", actor_user_id=principal.user.id, client=principal.client
        )
    response: Response = (
        RedirectResponse("/login", status_code=303)
        if is_form(request)
        else Response(status_code=204)
    )
    clear_session_cookies(response, _settings(request))
    return response


@router.post("/logout-all", response_model=MessageOut)
async def sign_out_everywhere(
    request: Request, principal: SetupFullAccess, db: DbSession
) -> Response:
    """Revoke every browser session of this account, this one included.

    Needs a browser session or a `full` key: a narrow key must not sign its owner out.
    """
    count = await revoke_all_sessions(db, user_id=principal.user.id)
    audit.record(
        db,
        action="auth.sign_out_everywhere",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        details={"sessions": count},
    )
    response: Response = (
        RedirectResponse("/login", status_code=303)
        if is_form(request)
        else JSONResponse({"message": f"Signed out of {count} session(s)."})
    )
    clear_session_cookies(response, _settings(request))
    return response


@router.post("/consent", response_model=MeOut, openapi_extra=body_doc(ConsentIn))
async def give_consent(request: Request, principal: SetupUser, db: DbSession) -> Response:
    """Confirm you are 18 or older and accept the current Terms and Privacy Policy."""
    if principal.api_key is not None:
        raise ForbiddenError("Consent must be given by the person, in a signed-in browser session")

    async def action() -> Response:
        data = await parse_body(request, ConsentIn)
        user = await accounts.give_consent(
            db, user=principal.user, data=data, client=principal.client
        )
        if is_form(request):
            return RedirectResponse("/home", status_code=303)
        return JSONResponse(accounts.me_out(user).model_dump(mode="json"))

    return await _form_or_json(
        request, db, "onboarding.html", action, user=principal.user, **_policy_context(request)
    )


@router.post(
    "/password/forgot", status_code=202, response_model=MessageOut, openapi_extra=body_doc(EmailIn)
)
async def forgot_password(request: Request, db: DbSession) -> Response:
    """Email a single-use password reset link (the answer is the same for unknown addresses)."""

    async def action() -> Response:
        await _check_anonymous_csrf(request)
        data = await parse_body(request, EmailIn)
        if await _within_email_budget(request, data.email):
            await accounts.request_password_reset(
                db,
                email=data.email,
                settings=_settings(request),
                keyring=request.app.state.keyring,
            )
        message = "If that address has an account, a reset link is on its way."
        if is_form(request):
            return render(
                request, "message.html", status_code=202, title="Check your inbox", message=message
            )
        return JSONResponse({"message": message}, status_code=202)

    return await _form_or_json(request, db, "forgot.html", action)


@router.post("/password/reset", response_model=MessageOut, openapi_extra=body_doc(PasswordResetIn))
async def reset_password(request: Request, db: DbSession) -> Response:
    """Set a new password with the token from the reset link; signs out every session."""

    async def action() -> Response:
        await _check_anonymous_csrf(request)
        data = await parse_body(request, PasswordResetIn)
        user = await accounts.reset_password(
            db,
            reader=_reader(request),
            token=data.token,
            password=data.password,
            client=ClientInfo.from_request(request),
        )
        starter = request.app.state.settings.starter_credits
        await grant_starter_credits(db, user=user, credits=starter)
        message = "Your password is changed. Sign in with the new one."
        if is_form(request):
            return render(
                request,
                "message.html",
                title="Password changed",
                message=message,
                link="/login",
                link_text="Sign in",
            )
        return JSONResponse({"message": message})

    token = request.query_params.get("token", "")
    return await _form_or_json(request, db, "reset.html", action, token=token)


@router.post(
    "/password/change", response_model=MessageOut, openapi_extra=body_doc(PasswordChangeIn)
)
async def change_password(request: Request, principal: SetupUser, db: DbSession) -> Response:
    """Change your password; every other session is signed out."""
    if principal.api_key is not None:
        raise ForbiddenError("Change your password in a signed-in browser session")
    data = await parse_body(request, PasswordChangeIn)
    # End the authenticator's transaction (on SQLite, the write lock) before argon2 runs.
    await db.commit()
    await accounts.change_password(
        db,
        user=principal.user,
        current_password=data.current_password,
        new_password=data.new_password,
        client=principal.client,
        keep_session_id=principal.auth_session.id if principal.auth_session else None,
    )
    return JSONResponse({"message": "Password changed; your other sessions are signed out."})
