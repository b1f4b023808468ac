"""A fake Google OpenID Connect provider served over real HTTP on 127.0.0.1.

It speaks the parts of Google's protocol LunoGen uses: discovery, JWKS, the authorization
endpoint (code flow with PKCE S256, state and nonce) and the token endpoint (client_secret_basic
or client_secret_post; single-use codes; RS256 ID tokens with `at_hash`). A test sets `identity`
to choose who "signs in at Google", and the `Misbehaviour` knobs to make the provider lie.

Like real Google, its discovery document names the issuer `https://accounts.google.com` (only
the endpoints are on 127.0.0.1), ID tokens carry `iss` = that issuer and `azp` = the client id,
and its signing keys rotate: `rotate()` publishes a new key and signs with it, `retire(kid)`
drops an old one from the JWKS.

It also serves profile pictures, as lh3.googleusercontent.com does: `pictures[name]` is what
`/photos/<name>` answers (a small PNG by default, and the `picture` claim of the default
identity). A `PictureAnswer` can lie about its type, be too big, stall or redirect.

    with FakeGoogle.running(client_id=..., client_secret=..., redirect_uris=[...]) as google:
        google.identity = Identity(sub="1234", email="ada@example.com")
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from tests.fakes.server import loopback_socket, serve_in_thread

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
CODE_TTL_SECONDS = 600
GOOGLE_ISSUER = "https://accounts.google.com"  # what accounts.google.com's discovery says
FIRST_KID = "fake-google-1"
# The default identity's `picture` claim: this fake's own /photos/default, filled in when a
# token is issued (the port is known only then).
OWN_PICTURE = "fake-google:/photos/default"
# A real 1x1 PNG (a white pixel).
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)


@dataclass
class PictureAnswer:
    """What `/photos/<name>` answers."""

    body: bytes = PNG_1X1
    content_type: str = "image/png"
    status: int = 200
    redirect: str | None = None  # answer 302 to this URL instead
    stall: str | None = None  # "headers": never answer; "body": send headers, then stall
    stall_seconds: float = 5.0
    chunked: bool = False  # no Content-Length (the size is only known by reading)
    during: Callable[[], None] | None = None  # run while the request is being answered


@dataclass
class Identity:
    """The Google account that completes the consent screen."""

    sub: str
    email: str
    email_verified: bool = True
    name: str | None = "Ada Lovelace"
    picture: str | None = OWN_PICTURE


@dataclass
class Misbehaviour:
    """Knobs that make the provider issue bad ID tokens or fail; all off by default."""

    audience: str | list[str] | None = None  # `aud` instead of the client id
    azp: str | None = None  # `azp` instead of the client id
    omit_azp: bool = False
    issuer: str | None = None  # `iss` instead of https://accounts.google.com
    nonce: str | None = None  # `nonce` instead of the one the client sent
    lifetime_seconds: int = 3600  # negative: the ID token has already expired
    issued_at_offset: int = 0  # shift `iat` (and `exp` with it)
    unknown_key_kid: str | None = None  # sign with a key not in the JWKS, under this `kid`
    omit_id_token: bool = False
    deny_consent: bool = False  # the person clicks "Cancel": redirect with error=access_denied
    token_endpoint_status: int | None = None  # answer the token request with this bare status


@dataclass
class PendingCode:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    identity: Identity
    expires_at: float


@dataclass
class TokenRequest:
    """What the relying party sent to /token, for assertions."""

    auth_method: str
    form: dict[str, str]
    outcome: str


@dataclass
class FakeGoogle:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    base_url: str = ""
    identity: Identity = field(
        default_factory=lambda: Identity(sub="100000000000000000001", email="ada@example.com")
    )
    misbehaviour: Misbehaviour = field(default_factory=Misbehaviour)
    codes: dict[str, PendingCode] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[TokenRequest] = field(default_factory=list)
    issued_access_tokens: dict[str, Identity] = field(default_factory=dict)
    issued_id_tokens: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    jwks_requests: int = 0
    pictures: dict[str, PictureAnswer] = field(default_factory=lambda: {"default": PictureAnswer()})
    picture_requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.first_key = _signing_key(FIRST_KID)
        self.keys: dict[str, RSAKey] = {FIRST_KID: self.first_key}  # every key ever made
        self.published: list[str] = [FIRST_KID]  # the kids in the JWKS, in order
        self.signing_kid = FIRST_KID
        self.rogue_key = RSAKey.generate_key(2048)
        self._lock = threading.Lock()

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/.well-known/openid-configuration"

    def picture_url(self, name: str) -> str:
        return f"{self.base_url}/photos/{name}"

    @property
    def issuer(self) -> str:
        return GOOGLE_ISSUER

    @property
    def key(self) -> RSAKey:
        """The key that signs ID tokens now (retired or not)."""
        return self.keys[self.signing_kid]

    def rotate(self) -> str:
        """Publish a new key and sign with it from now on (the old one stays published)."""
        with self._lock:
            kid = f"fake-google-{len(self.keys) + 1}"
            self.keys[kid] = _signing_key(kid)
            self.published.append(kid)
            self.signing_kid = kid
        return kid

    def retire(self, kid: str) -> None:
        """Drop a key from the JWKS, as Google does once no valid token can carry it."""
        with self._lock:
            self.published.remove(kid)

    def reset(self) -> None:
        with self._lock:
            self.identity = Identity(sub="100000000000000000001", email="ada@example.com")
            self.misbehaviour = Misbehaviour()
            self.codes.clear()
            self.authorize_requests.clear()
            self.token_requests.clear()
            self.issued_access_tokens.clear()
            self.issued_id_tokens.clear()
            self.keys = {FIRST_KID: self.first_key}
            self.published = [FIRST_KID]
            self.signing_kid = FIRST_KID
            self.jwks_requests = 0
            self.pictures = {"default": PictureAnswer()}
            self.picture_requests.clear()

    # -- HTTP --------------------------------------------------------------------------------

    def asgi_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
                Route("/userinfo", self._userinfo),
                Route("/photos/{name}", self._photo),
            ]
        )

    async def _photo(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.picture_requests.append(name)
        answer = self.pictures.get(name)
        if answer is None:
            return PlainTextResponse("Not Found", status_code=404)
        if answer.during is not None:
            answer.during()
        if answer.redirect is not None:
            return RedirectResponse(answer.redirect, status_code=302)
        if answer.stall == "headers":
            await asyncio.sleep(answer.stall_seconds)
        if answer.stall == "body" or answer.chunked:
            return StreamingResponse(
                _trickle(answer), status_code=answer.status, media_type=answer.content_type
            )
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    async def _discovery(self, request: Request) -> Response:
        base = self.base_url
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                ],
                "claims_supported": [
                    "aud",
                    "email",
                    "email_verified",
                    "exp",
                    "iat",
                    "iss",
                    "name",
                    "picture",
                    "sub",
                    "nonce",
                ],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        with self._lock:
            self.jwks_requests += 1
            keys = [self.keys[kid] for kid in self.published]
        return JSONResponse(KeySet(keys).as_dict(private=False))

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.authorize_requests.append(params)
        # Like Google: a bad client or redirect URI is shown to the person, never redirected.
        if params.get("client_id") != self.client_id:
            return PlainTextResponse("Error 401: invalid_client", status_code=401)
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in self.redirect_uris:
            return PlainTextResponse("Error 400: redirect_uri_mismatch", status_code=400)
        state = params.get("state")

        def back(**values: str) -> Response:
            if state is not None:
                values["state"] = state
            return RedirectResponse(f"{redirect_uri}?{urlencode(values)}", status_code=302)

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if "openid" not in params.get("scope", "").split():
            return back(error="invalid_scope")
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or not challenge:
            return back(error="invalid_request", error_description="PKCE S256 required")
        if self.misbehaviour.deny_consent:
            return back(error="access_denied")
        code = "4/" + secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = PendingCode(
                client_id=self.client_id,
                redirect_uri=redirect_uri,
                code_challenge=challenge,
                nonce=params.get("nonce"),
                scope=params["scope"],
                identity=self.identity,
                expires_at=time.time() + CODE_TTL_SECONDS,
            )
        return back(code=code, scope=params["scope"])

    def _client_auth(self, request: Request, form: dict[str, str]) -> tuple[str, str, str]:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            decoded = base64.b64decode(header[6:]).decode()
            client_id, _, secret = decoded.partition(":")
            return "client_secret_basic", client_id, secret
        return "client_secret_post", form.get("client_id", ""), form.get("client_secret", "")

    async def _token(self, request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        method, client_id, secret = self._client_auth(request, form)

        def fail(outcome: str, status: int = 400, description: str = "") -> Response:
            self.token_requests.append(TokenRequest(method, form, outcome))
            body = {"error": outcome, "error_description": description or outcome}
            return JSONResponse(body, status_code=status)

        if self.misbehaviour.token_endpoint_status is not None:
            self.token_requests.append(TokenRequest(method, form, "forced_status"))
            return PlainTextResponse(
                "<html>Server Error</html>", status_code=self.misbehaviour.token_endpoint_status
            )
        if client_id != self.client_id or not secrets.compare_digest(secret, self.client_secret):
            return fail("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            return fail("unsupported_grant_type")
        with self._lock:
            pending = self.codes.pop(form.get("code", ""), None)  # single use, even on failure
        if pending is None or pending.expires_at < time.time():
            return fail("invalid_grant", description="Malformed auth code.")
        if form.get("redirect_uri") != pending.redirect_uri:
            return fail("redirect_uri_mismatch")
        verifier = form.get("code_verifier", "")
        if not _VERIFIER.match(verifier) or s256(verifier) != pending.code_challenge:
            return fail("invalid_grant", description="Invalid code verifier.")
        access_token = "ya29." + secrets.token_urlsafe(32)
        self.issued_access_tokens[access_token] = pending.identity
        body: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": 3599,
            "token_type": "Bearer",
            "scope": pending.scope,
        }
        if not self.misbehaviour.omit_id_token:
            body["id_token"] = self.id_token(pending, access_token=access_token)
        self.token_requests.append(TokenRequest(method, form, "ok"))
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def _userinfo(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        identity = self.issued_access_tokens.get(token)
        if identity is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse(self._profile(identity))

    def _profile(self, identity: Identity) -> dict[str, Any]:
        profile = _profile(identity)
        if profile.get("picture") == OWN_PICTURE:
            profile["picture"] = self.picture_url("default")
        return profile

    # -- ID tokens ---------------------------------------------------------------------------

    def id_token(self, pending: PendingCode, *, access_token: str) -> str:
        knobs = self.misbehaviour
        now = int(time.time()) + knobs.issued_at_offset
        claims: dict[str, Any] = {
            "iss": knobs.issuer or self.issuer,
            "aud": knobs.audience if knobs.audience is not None else pending.client_id,
            "sub": pending.identity.sub,
            "iat": now,
            "exp": now + knobs.lifetime_seconds,
            "at_hash": _half_hash(access_token),
            **self._profile(pending.identity),
        }
        if not knobs.omit_azp:
            claims["azp"] = knobs.azp if knobs.azp is not None else pending.client_id
        nonce = knobs.nonce or pending.nonce
        if nonce is not None:
            claims["nonce"] = nonce
        if knobs.unknown_key_kid is not None:
            header = {"alg": "RS256", "kid": knobs.unknown_key_kid, "typ": "JWT"}
            key = self.rogue_key
        else:
            key = self.key
            header = {"alg": "RS256", "kid": str(key.kid), "typ": "JWT"}
        self.issued_id_tokens.append((header, claims))
        return jwt.encode(header, claims, key)

    # -- running -----------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(
        cls, *, client_id: str, client_secret: str, redirect_uris: list[str]
    ) -> Iterator[FakeGoogle]:
        fake = cls(client_id=client_id, client_secret=client_secret, redirect_uris=redirect_uris)
        sock, port = loopback_socket()
        fake.base_url = f"http://127.0.0.1:{port}"
        with serve_in_thread(fake.asgi_app(), sock, name="the fake Google provider"):
            yield fake


def _signing_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _half_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def _profile(identity: Identity) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "sub": identity.sub,
        "email": identity.email,
        "email_verified": identity.email_verified,
    }
    if identity.name is not None:
        profile["name"] = identity.name
    if identity.picture is not None:
        profile["picture"] = identity.picture
    return profile


async def _trickle(answer: PictureAnswer) -> AsyncIterator[bytes]:
    """The body in 16 KiB pieces; a "body" stall waits after the first one."""
    for start in range(0, len(answer.body), 16 * 1024):
        yield answer.body[start : start + 16 * 1024]
        if answer.stall == "body":
            await asyncio.sleep(answer.stall_seconds)
