"""[processors] We send data only to the services needed to run LunoGen: the model provider
(OpenRouter or the OpenAI-compatible endpoint the operator configures) for your agents' model
calls, the moderation service the operator configures (if any) for checking messages, Stripe for
payments, Google when you choose to sign in with Google, the email server the operator
configures, the channels you connect to your agents (WhatsApp, Telegram, your own webhook URLs),
the remote MCP servers you add to your agents (and their sign-in servers), and the web pages your
agents fetch when you give them the web_fetch tool. We do not sell data or share it for
advertising.

Two checks. The static one reads every module of `src/lunogen`: each one that builds an
outbound client or sends through one must be in `OUTBOUND` with the service it serves, and each
URL literal's host must be in `HOSTS`; a new one fails here until it is declared (and, if it is a
new recipient, named in the policy). The runtime one points every outbound setting at fakes on
127.0.0.1, runs the main flows (sign-up with email, Google sign-in with its picture, a Stripe
checkout, an agent answering through the model over a webhook channel and Telegram, a
web_fetch, the account's deletion cancelling the subscription) and records every connection
and every name lookup the process makes: each one goes to a configured service.
"""

from __future__ import annotations

import ast
import asyncio
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lunogen.config import Settings
from lunogen.privacy.models import StripeCancellation
from lunogen.worker import enqueue
from tests.agent.support import create_agent, new_dev
from tests.channel.receiver import Receiver
from tests.channel.support import until
from tests.conftest import PG_URL, REDIS_URL
from tests.fakes import telegram as fake_telegram
from tests.fakes.google_oidc import FakeGoogle, Identity
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.fakes.server import loopback_socket, serve_in_thread
from tests.fakes.smtp import FakeSmtp, fake_smtp
from tests.fakes.stripe import FakeStripe
from tests.fakes.website import Website
from tests.helpers import PASSWORD, Api
from tests.privacy.promise_support import (  # noqa: F401 (fixtures)
    google,
    google_server,
    google_settings,
    google_sign_in,
)
from tests.privacy.promises import sentence
from tests.privacy.support import subscribe

TAG = "processors"
SENTENCE = sentence(TAG)
SRC = Path(__file__).parents[2] / "src" / "lunogen"
telegram = fake_telegram.telegram

MODEL = "the model provider (LUNOGEN_LLM_BASE_URL: OpenRouter or an OpenAI-compatible endpoint)"
MODERATION = "the moderation service (LUNOGEN_MODERATION_URL)"
STRIPE = "Stripe (LUNOGEN_STRIPE_API_BASE)"
GOOGLE = "Google (LUNOGEN_GOOGLE_DISCOVERY_URL and the picture URL Google gives)"
EMAIL = "the email server (LUNOGEN_SMTP_URL)"
CHANNELS = "the channels the owner connects (WhatsApp, Telegram, the owner's webhook URLs)"
WEB = "the web pages an agent fetches with web_fetch"
MCP = "the remote MCP servers the owner adds to an agent, and their OAuth authorization servers"
NOT_OUT = "not outbound"

# Every module that builds an outbound client or sends through one, and whom it serves.
OUTBOUND: dict[str, str] = {
    "llm/provider.py": MODEL,  # openai.AsyncOpenAI: chat completions
    "llm/refresh.py": MODEL,  # httpx: the model catalog (GET <llm_base_url>/models)
    "billing/stripe_client.py": STRIPE,  # checkout, portal, refunds
    "privacy/subscriptions.py": STRIPE,  # cancelling a deleted account's subscription
    "auth/google.py": GOOGLE,  # Authlib OAuth: discovery, token exchange, JWKS
    "account/picture.py": GOOGLE,  # SafeHttp: the Google profile picture, copied once
    "notification/email.py": EMAIL,  # aiosmtplib
    "channel/registration.py": CHANNELS,  # SafeHttp: register and unregister with a provider
    "channel/delivery.py": CHANNELS,  # SafeHttp: send replies
    "channel/telegram/api.py": CHANNELS,  # <telegram_api_base>/bot<token>/<method>
    "channel/whatsapp/graph.py": CHANNELS,  # <whatsapp_api_base>/<version>/...
    "channel/webhook.py": CHANNELS,  # the owner's callback URL
    "moderation/classifier.py": MODERATION,  # SafeHttp: POST <moderation_url>/moderations
    "tool/registry.py": WEB,  # SafeHttp for the network tools
    "tool/web_fetch.py": WEB,
    "tool/mcp/oauth.py": MCP,  # SafeHttp: OAuth discovery, registration, code exchange
    "tool/mcp/tools.py": MCP,  # the guarded client: tool calls in turns
    "kit/http.py": NOT_OUT + ": SafeHttp itself (used by the modules above)",
    "kit/safe_transport.py": NOT_OUT + ": the SafeHttp-guarded httpx client (MCP uses it)",
    "serving.py": NOT_OUT + ": the listening socket of `lunogen serve`",
    "sandbox/check.py": NOT_OUT + ": a loopback listener proving a sandbox cannot reach it",
}

# Every host named in a URL literal, and why it is there.
HOSTS: dict[str, str] = {
    "openrouter.ai": MODEL + ": the default LUNOGEN_LLM_BASE_URL",
    "api.stripe.com": STRIPE + ": named in a docstring (the SDK's own default)",
    "accounts.google.com": GOOGLE + ": the default discovery URL, the issuer, the CSP form-action",
    "api.telegram.org": CHANNELS + ": the default LUNOGEN_TELEGRAM_API_BASE",
    "graph.facebook.com": CHANNELS + ": the default LUNOGEN_WHATSAPP_API_BASE",
    "127.0.0.1:8000": NOT_OUT + ": the default public URL (LunoGen itself)",
    "t.me": NOT_OUT + ": the bot's link shown to the owner",
    "github.com": NOT_OUT + ": in the User-Agent of SafeHttp",
    "www.w3.org": NOT_OUT + ": the SVG namespace of the charts",
    "example.com": NOT_OUT + ": an example in an error message",
    "shop.example.com": NOT_OUT + ": an example in the channel form",
}

# Calls that build a client or open a connection: (module or object name, attribute).
_CLIENTS = {
    ("httpx", "AsyncClient"),
    ("httpx", "Client"),
    ("httpx", "AsyncHTTPTransport"),
    ("httpx", "HTTPTransport"),
    ("openai", "AsyncOpenAI"),
    ("openai", "OpenAI"),
    ("stripe", "StripeClient"),
    ("stripe", "HTTPXClient"),
    ("stripe", "RequestsClient"),
    ("aiosmtplib", "SMTP"),
    ("aiosmtplib", "send"),
    ("smtplib", "SMTP"),
    ("smtplib", "SMTP_SSL"),
    ("request", "urlopen"),
    ("urllib", "request"),
    ("socket", "socket"),
    ("socket", "create_connection"),
    ("asyncio", "open_connection"),
    ("oauth", "register"),
}
_BARE = {"SafeHttp", "AsyncOpenAI", "OAuth", "urlopen", "create_connection", "open_connection"}
_HTTPX_VERBS = {"get", "post", "put", "patch", "delete", "request", "stream", "head", "options"}
_SENDS = {"send", "fetch", "get", "post", "stream"}
_URL = re.compile(r"https?://([A-Za-z0-9.-]+(?::[0-9]+)?)")


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def outbound_calls(source: str) -> set[str]:
    """What in `source` builds an outbound client, opens a connection or sends through one."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            module = getattr(node, "module", None) or ""
            if any(n.split(".")[0] in ("requests", "aiohttp", "urllib3", "pycurl") for n in names):
                found.add(f"import {names}")
            if module.split(".")[0] in ("requests", "aiohttp", "urllib3", "pycurl"):
                found.add(f"from {module}")
            if module == "urllib.request" or "urllib.request" in names:
                found.add("urllib.request")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in _BARE:
            found.add(func.id)
        if isinstance(func, ast.Attribute):
            base = _name(func.value)
            if (base, func.attr) in _CLIENTS or func.attr in _BARE:
                found.add(f"{base}.{func.attr}")
            if base == "httpx" and func.attr in _HTTPX_VERBS:
                found.add(f"httpx.{func.attr}")
            if base == "http" and func.attr in _SENDS:
                found.add(f"http.{func.attr}")
            if func.attr == "safe_http":
                found.add("safe_http()")
    return found


def _modules() -> Iterator[tuple[str, str]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(SRC).as_posix(), path.read_text(encoding="utf-8")


def test_every_module_that_reaches_out_is_declared_with_its_service() -> None:
    found = {name: calls for name, source in _modules() if (calls := outbound_calls(source))}
    undeclared = {name: sorted(calls) for name, calls in found.items() if name not in OUTBOUND}
    assert undeclared == {}, "declare these in OUTBOUND (and name a new recipient in the policy)"
    gone = sorted(set(OUTBOUND) - set(found))
    assert gone == [], "modules in OUTBOUND that no longer call out: drop them"


def test_the_scan_sees_each_kind_of_client() -> None:
    samples = {
        "import httpx\nhttpx.AsyncClient()": "httpx.AsyncClient",
        "import httpx\nhttpx.post('u')": "httpx.post",
        "from lunogen.kit.http import SafeHttp\nSafeHttp()": "SafeHttp",
        "import openai\nopenai.AsyncOpenAI()": "openai.AsyncOpenAI",
        "import stripe\nstripe.StripeClient('k')": "stripe.StripeClient",
        "import aiosmtplib\naiosmtplib.send(m)": "aiosmtplib.send",
        "import smtplib\nsmtplib.SMTP('h')": "smtplib.SMTP",
        "from urllib.request import urlopen\nurlopen('u')": "urlopen",
        "import asyncio\nasyncio.open_connection('h', 1)": "asyncio.open_connection",
        "async def f(ctx):\n    await ctx.http.send('GET', 'u')": "http.send",
        "import requests": "import ['requests']",
    }
    for source, expected in samples.items():
        assert expected in outbound_calls(source), source
    assert outbound_calls("from urllib.parse import urlsplit\nurlsplit('u')") == set()


def test_every_host_in_the_code_is_declared() -> None:
    hosts: dict[str, set[str]] = {}
    for name, source in _modules():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for host in _URL.findall(node.value):
                    hosts.setdefault(host.rstrip("."), set()).add(name)
    for path in sorted(SRC.rglob("*")):
        if path.suffix in (".html", ".js", ".css", ".md", ".toml", ".txt"):
            for host in _URL.findall(path.read_text(encoding="utf-8")):
                hosts.setdefault(host.rstrip("."), set()).add(path.relative_to(SRC).as_posix())
    declared = {host.rstrip(".") for host in HOSTS}
    undeclared = {host: sorted(names) for host, names in hosts.items() if host not in declared}
    assert undeclared == {}, "declare these hosts in HOSTS with the service they belong to"
    assert sorted(declared - hosts.keys()) == [], "hosts in HOSTS the code no longer names"


def test_the_declared_services_are_the_ones_the_policy_names() -> None:
    text = " ".join(SENTENCE.split())
    for named in (
        "model provider",
        "OpenRouter",
        "OpenAI-compatible endpoint",
        "moderation service",
        "Stripe",
        "Google",
        "email server",
        "WhatsApp",
        "Telegram",
        "webhook URLs",
        "web_fetch",
        "MCP servers",
    ):
        assert named in text, named
    served = {service for service in OUTBOUND.values() if not service.startswith(NOT_OUT)}
    assert served == {MODEL, MODERATION, STRIPE, GOOGLE, EMAIL, CHANNELS, WEB, MCP}
    assert "LUNOGEN_MODERATION_URL" in MODERATION


# -- runtime -------------------------------------------------------------------------------------


@dataclass
class Wire:
    """Every TCP connection and every name lookup this process makes while it is installed."""

    connections: list[tuple[str, int]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        connect, connect_ex, getaddrinfo = (
            socket.socket.connect,
            socket.socket.connect_ex,
            socket.getaddrinfo,
        )

        def record(address: Any) -> None:
            if isinstance(address, tuple):
                self.connections.append((str(address[0]), int(address[1])))

        def wired_connect(sock: socket.socket, address: Any) -> None:
            record(address)
            connect(sock, address)

        def wired_connect_ex(sock: socket.socket, address: Any) -> int:
            record(address)
            return connect_ex(sock, address)

        def wired_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host is not None:
                self.lookups.append(host.decode() if isinstance(host, bytes) else str(host))
            return getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", wired_connect)
        monkeypatch.setattr(socket.socket, "connect_ex", wired_connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", wired_getaddrinfo)


@dataclass
class FakeModeration:
    """An OpenAI-compatible `/moderations` endpoint that flags nothing and counts its calls."""

    port: int
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _moderate(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append(body)
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        result = {"flagged": False, "categories": {}, "category_scores": {}}
        return JSONResponse({"id": "modr-1", "model": "fake", "results": [result] * count})


@pytest.fixture
def moderation() -> Iterator[FakeModeration]:
    sock, port = loopback_socket()
    fake = FakeModeration(port=port)
    app = Starlette(
        routes=[
            Route("/v1/moderations", fake._moderate, methods=["POST"]),
            Route("/moderations", fake._moderate, methods=["POST"]),
        ]
    )
    with serve_in_thread(app, sock, name="fake moderation"):
        yield fake


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with fake_smtp() as server:
        yield server


@pytest.fixture
def site() -> Iterator[Website]:
    with Website.running() as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as fake:
        yield fake


@pytest.fixture
def settings_overrides(
    openrouter: FakeOpenRouter,
    stripe_fake: FakeStripe,
    google: FakeGoogle,  # noqa: F811
    telegram: fake_telegram.FakeTelegram,
    smtp: FakeSmtp,
    moderation: FakeModeration,
) -> dict[str, object]:
    from tests.billing.stripe_support import billing_settings

    values: dict[str, object] = {
        **openrouter_settings(openrouter, allow_private_urls=True, sweep_interval_seconds=0),
        **billing_settings(stripe_fake),
        **google_settings(google),
        **fake_telegram.telegram_settings(telegram),
        "whatsapp_api_base": "http://127.0.0.1:9/",  # configured, never reached: no such channel
        "smtp_url": smtp.url,
    }
    values["moderation_url"] = moderation.url
    return values


_DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "smtp": 25,
    "smtps": 465,
    "postgresql": 5432,
    "redis": 6379,
    "rediss": 6379,
}


def _configured(settings: Settings) -> set[tuple[str, int]]:
    """(host, port) of every outbound service and store the settings configure."""
    urls = [
        settings.llm_base_url,
        settings.stripe_api_base,
        settings.google_discovery_url,
        settings.telegram_api_base,
        settings.whatsapp_api_base,
        settings.smtp_url,
        settings.moderation_url,
        PG_URL,
        REDIS_URL,
    ]
    found: set[tuple[str, int]] = set()
    for url in urls:
        if url:
            parts = urlsplit(url)
            assert parts.hostname is not None
            found.add((parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme.split("+")[0]]))
    return found


async def test_every_connection_of_the_main_flows_goes_to_a_configured_service(
    api: Api,
    monkeypatch: pytest.MonkeyPatch,
    openrouter: FakeOpenRouter,
    stripe_fake: FakeStripe,
    google: FakeGoogle,  # noqa: F811
    telegram: fake_telegram.FakeTelegram,
    smtp: FakeSmtp,
    moderation: FakeModeration,
    site: Website,
    receiver: Receiver,
) -> None:
    wire = Wire()
    wire.install(monkeypatch)
    settings: Settings = api.app.state.settings

    # Sign-up: the verification email over SMTP; Google sign-in with the picture copied.
    dev = await new_dev(api, plan="free")
    browser = api.new_client()
    signed = await google_sign_in(
        browser, google, Identity(sub="700000000000000000007", email="p@example.com")
    )
    assert signed.status_code == 303, signed.text
    # Stripe: a checkout and its completion.
    subscription = await subscribe(api, stripe_fake, dev)
    # An agent with the owner's webhook URL, Telegram and web_fetch: the model answers a message
    # after fetching a page; the reply goes to the callback URL.
    bot = telegram.add_bot()
    agent = await create_agent(
        dev,
        tools=["web_fetch"],
        channels=[
            {"type": "webhook", "mode": "async", "callback_url": receiver.url},
            {"type": "telegram", "bot_token": bot.token, "access": {"policy": "open"}},
        ],
    )
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    openrouter.call_tool("web_fetch", {"url": site.url("/page.html")})
    openrouter.reply("Here is the page.")
    from tests.channel.support import Hook

    hook = Hook(api, dev, agent, next(c for c in agent["channels"] if c["type"] == "webhook"))
    posted = await hook.post({"id": "m-1", "from": "ada", "text": "Read the page"})
    assert posted.status_code in (200, 202), posted.text

    async def called_back() -> bool:
        await enqueue.drain()
        return len(receiver.received()) >= 1

    await until(called_back, "the reply at the owner's webhook URL")
    # Closing the account cancels the subscription at Stripe.
    closed = await dev.person.client.post(
        "/api/v1/account/delete", json={"password": PASSWORD}, headers=dev.person.headers
    )
    assert closed.status_code in (200, 202), closed.text

    async def cancelled() -> bool:
        await enqueue.drain()
        async with api.app.state.sessionmaker() as session:
            rows = (await session.execute(select(StripeCancellation))).scalars().all()
        return bool(rows) and all(r.status == "done" for r in rows)

    await until(cancelled, "the subscription's cancellation at Stripe")
    await asyncio.sleep(0)

    # Each service was reached (the flows ran to their end) ...
    assert smtp.messages, "no email was sent over SMTP"
    assert google.token_requests, "Google's token endpoint was not called"
    assert stripe_fake.subscriptions[subscription]["status"] == "canceled"
    assert openrouter.chat_requests and bot.token in {c.token for c in telegram.calls()}
    assert [r for r in site.requests if r.path == "/page.html"], "web_fetch did not fetch"
    assert moderation.calls, "the moderation service was configured but never called"

    # ... and nothing else was.
    allowed = _configured(settings) | {
        ("127.0.0.1", site.port),
        ("127.0.0.1", receiver.port),
    }
    strays = sorted({c for c in wire.connections if c not in allowed})
    assert strays == [], f"connections to unconfigured destinations: {strays}"
    names = {host for host, _ in allowed} | {"localhost"}
    assert sorted({h for h in wire.lookups if h not in names}) == []
    assert wire.connections, "the recorder saw no connection at all"
