"""Google Sign-In (OpenID Connect) with Authlib's Starlette client.

Authlib does discovery, PKCE (S256), `state` and `nonce`, and validates the ID token's signature
against the JWKS plus `iss`, `aud`, `exp` and `nonce`. It keeps the pending state in a short-lived
signed `lg_oauth` cookie (Starlette's session middleware) that is cleared after the callback.
We add what it leaves out: accounts keyed on `sub`, `email_verified` before any linking.

The callback's order matters: every call to Google (the token exchange, then the profile
picture, `account.picture`) happens before the request's session runs its first statement, so
no outside call waits inside the write transaction (on SQLite, the process's only write lock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import structlog
from authlib.common.errors import AuthlibBaseError
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from joserfc.errors import JoseError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.account import picture as pictures
from lunogen.account import service as accounts
from lunogen.account.models import User
from lunogen.account.picture import Picture
from lunogen.audit import service as audit
from lunogen.auth.sessions import create_session, set_session_cookies
from lunogen.billing.grants import grant_starter_credits
from lunogen.config import Settings
from lunogen.dashboard.render import render
from lunogen.db import DbSession, read_sessionmaker
from lunogen.errors import LunogenError
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo

if TYPE_CHECKING:
    # Imported only where Google sign-in is configured (~60 ms with joserfc and x509).
    from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/auth/google", tags=["auth"], include_in_schema=False)

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
STATE_COOKIE = "lg_oauth"
# Google's picture URLs are https; http is accepted for a provider on loopback (tests, a
# development identity provider), which the SSRF guard refuses unless private URLs are allowed.
PICTURE_SCHEMES = ("https://", "http://")


class GoogleSignInError(LunogenError):
    status_code = 400
    error = "Google sign-in failed"


def create_oauth(settings: Settings) -> OAuth | None:
    if not settings.google_enabled:
        return None
    from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    oauth.register(
        "google",
        client_id=settings.google_client_id,
        client_secret=settings.google_client_secret,
        server_metadata_url=settings.google_discovery_url,
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
    )
    return oauth


def _client(request: Request) -> StarletteOAuth2App:
    oauth: OAuth | None = request.app.state.oauth
    if oauth is None:
        raise GoogleSignInError("Google sign-in is not configured on this server")
    client: StarletteOAuth2App = oauth.create_client("google")
    return client


@router.get("/start")
async def google_start(request: Request) -> Response:
    client = _client(request)
    settings: Settings = request.app.state.settings
    redirect_uri = f"{settings.public_url}/auth/google/callback"
    try:
        response: Response = await client.authorize_redirect(request, redirect_uri)
    except (httpx.HTTPError, AuthlibBaseError, ValueError, KeyError) as exc:
        log.warning("google_discovery_failed", error=str(exc))
        return render(
            request,
            "message.html",
            status_code=502,
            title="Google sign-in unavailable",
            message="We could not reach Google. Try again in a minute.",
        )
    return response


async def _issuer_values(client: StarletteOAuth2App) -> list[str]:
    metadata = await client.load_server_metadata()
    issuer = str(metadata.get("issuer", ""))
    return list(GOOGLE_ISSUERS) if issuer in GOOGLE_ISSUERS else [issuer]


@router.get("/callback")
async def google_callback(request: Request, db: DbSession) -> Response:
    client = _client(request)
    settings: Settings = request.app.state.settings
    try:
        if "error" not in request.query_params and not request.session:
            raise GoogleSignInError("Your sign-in attempt expired or came from another browser")
        token = await client.authorize_access_token(
            request,
            claims_options={
                "iss": {"essential": True, "values": await _issuer_values(client)},
                # Authlib checks `aud` only through `azp`; a token for another client must fail.
                "aud": {"essential": True, "value": settings.google_client_id},
                "exp": {"essential": True},
                "sub": {"essential": True},
            },
            leeway=30,
        )
        claims = token.get("userinfo")
        if not claims:
            raise GoogleSignInError("Google did not return an ID token")
        # Before `db` opens its write transaction: the download is an outside call.
        picture = await _download_picture(request, dict(claims))
        user = await sign_in_with_google(
            db, claims=dict(claims), client=ClientInfo.from_request(request), picture=picture
        )
    except (
        AuthlibBaseError,
        JoseError,
        httpx.HTTPError,
        GoogleSignInError,
        KeyError,
        ValueError,
    ) as exc:  # ValueError: a token endpoint answering something other than JSON
        request.session.clear()
        reason = exc.message if isinstance(exc, GoogleSignInError) else _describe(exc)
        log.info("google_sign_in_failed", reason=reason, error=repr(exc))
        return render(
            request,
            "message.html",
            status_code=400,
            title="Google sign-in failed",
            message=reason,
            link="/login",
            link_text="Back to sign in",
        )
    request.session.clear()
    await grant_starter_credits(db, user=user, credits=settings.starter_credits)
    row, session_token = await create_session(
        db, user=user, client=ClientInfo.from_request(request), settings=settings
    )
    target = "/home" if accounts.setup_problem(user) is None else "/onboarding"
    response = RedirectResponse(target, status_code=303)
    set_session_cookies(response, token=session_token, csrf_token=row.csrf_token, settings=settings)
    return response


def _picture_url(claims: dict[str, Any]) -> str | None:
    picture = claims.get("picture")
    if isinstance(picture, str) and picture.startswith(PICTURE_SCHEMES) and len(picture) <= 2000:
        return picture
    return None


async def _download_picture(request: Request, claims: dict[str, Any]) -> Picture | None:
    """The `picture` claim's image when the stored copy did not come from that URL, else None.

    Runs with no transaction open (a read-only session answers whether to download). Never
    raises for the picture's sake: a failed download is logged and the sign-in goes on.
    """
    url = _picture_url(claims)
    if url is None:
        return None
    sessionmaker = read_sessionmaker(request.app.state.sessionmaker)
    async with sessionmaker() as reading:
        wanted = await pictures.needs_download(reading, google_sub=str(claims["sub"]), url=url)
    if not wanted:
        return None
    settings: Settings = request.app.state.settings
    http = pictures.picture_http(allow_private=settings.allow_private_urls)
    return await pictures.download_or_none(url, http=http)


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPError | ValueError):
        return "Google did not answer as expected. Try again in a minute."
    description = getattr(exc, "description", None) or getattr(exc, "error", None)
    return f"{type(exc).__name__}: {description or exc}"


async def sign_in_with_google(
    session: AsyncSession,
    *,
    claims: dict[str, Any],
    client: ClientInfo,
    picture: Picture | None = None,
) -> User:
    """Find or create the account for a validated ID token. Keyed on `sub`, never on email.

    `picture`, downloaded beforehand from the `picture` claim's URL, replaces the stored one.
    """
    sub = str(claims["sub"])
    email = accounts.normalize_email(str(claims.get("email", "")))
    verified = claims.get("email_verified") in (True, "true")
    name = str(claims.get("name") or email.split("@")[0] or "Google user")[:200]

    user = (await session.execute(select(User).where(User.google_sub == sub))).scalar_one_or_none()
    if user is not None and user.deleted_at is not None:
        raise GoogleSignInError(
            "This account is being deleted: to keep it, use the link in the email we sent "
            "when it was deleted"
        )
    if user is None:
        if not email or not verified:
            raise GoogleSignInError(
                "Google has not verified this email address; verify it with Google or "
                "register with email and password"
            )
        user = await accounts.find_by_email(session, email)
        if user is not None:
            if user.google_sub is not None:
                raise GoogleSignInError(
                    "This email address is already linked to a different Google account"
                )
            details: dict[str, Any] = {}
            if user.email_verified_at is None:
                # Nobody proved they own this address, so whoever registered it may not be the
                # person Google just vouched for: drop their password and their attestation.
                user.password_hash = None
                user.name = name
                user.age_attested_at = None
                user.terms_version = user.privacy_version = None
                user.email_verified_at = utcnow()
                details["unverified_account_reset"] = True
            user.google_sub = sub
            audit.record(
                session,
                action="account.google_linked",
                actor_user_id=user.id,
                client=client,
                target_type="user",
                target_id=user.id,
                details=details,
            )
        else:
            if await session.scalar(select(User.id).where(User.email == email)) is not None:
                raise GoogleSignInError("This email address belongs to a closed account")
            user = User(email=email, name=name, google_sub=sub, email_verified_at=utcnow())
            session.add(user)
            await session.flush()
            audit.record(
                session,
                action="account.registered",
                actor_user_id=user.id,
                client=client,
                target_type="user",
                target_id=user.id,
                details={"method": "google"},
            )
    user.name = user.name or name
    picture_url = _picture_url(claims)
    if picture_url is not None:
        user.picture_url = picture_url  # Google's URL, as Google names it (see account.picture)
    if picture is not None:
        await pictures.store(session, user_id=user.id, picture=picture)
    audit.record(
        session,
        action="auth.sign_in",
        actor_user_id=user.id,
        client=client,
        details={"method": "google"},
    )
    return user
