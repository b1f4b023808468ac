"""The provider roots are settings (`LUNOGEN_TELEGRAM_API_BASE`, `LUNOGEN_WHATSAPP_API_BASE`),
reached through the SSRF-safe HTTP kit: a loopback or private root is refused unless
`LUNOGEN_ALLOW_PRIVATE_URLS` is set (as tests and self-hosted proxies set it)."""

from __future__ import annotations

import pytest

from lunogen.channel.contract import ChannelView, ProviderContext, RegistrationFailed
from lunogen.channel.telegram.channel import TELEGRAM
from lunogen.channel.whatsapp.kind import WHATSAPP
from lunogen.config import Settings
from lunogen.kit.http import FetchError, SafeHttp
from tests.fakes.telegram import FakeTelegram
from tests.fakes.telegram import telegram as telegram_fixture
from tests.fakes.telegram import telegram_server as telegram_server_fixture
from tests.fakes.whatsapp import FakeWhatsApp
from tests.fakes.whatsapp import whatsapp as whatsapp_fixture
from tests.fakes.whatsapp import whatsapp_server as whatsapp_server_fixture

telegram = telegram_fixture
telegram_server = telegram_server_fixture
whatsapp = whatsapp_fixture
whatsapp_server = whatsapp_server_fixture


def _ctx(allow_private: bool, **roots: str) -> ProviderContext:
    settings = Settings(allow_private_urls=allow_private, **roots)  # type: ignore[arg-type]
    return ProviderContext(settings=settings, http=SafeHttp(allow_private=allow_private))


def _view(kind: str, **secrets: str) -> ChannelView:
    return ChannelView(
        id="11111111-1111-1111-1111-111111111111",
        agent_id="a-1",
        agent_name="Luno",
        type=kind,
        config={"phone_number_id": "106540352242922", "api_version": "v21.0"},
        secrets=secrets,
        registration={},
    )


async def test_a_loopback_telegram_root_needs_allow_private_urls(telegram: FakeTelegram) -> None:
    bot = telegram.add_bot()
    view = _view("telegram", bot_token=bot.token)
    with pytest.raises((FetchError, RegistrationFailed)) as refused:
        await TELEGRAM.register(_ctx(False, telegram_api_base=telegram.api_base), view)
    assert "not allowed" in str(refused.value)
    assert bot.token not in str(refused.value)
    assert telegram.calls() == []  # nothing reached the fake
    allowed = await TELEGRAM.register(_ctx(True, telegram_api_base=telegram.api_base), view)
    assert allowed.details["username"] == bot.username


async def test_a_loopback_whatsapp_root_needs_allow_private_urls(whatsapp: FakeWhatsApp) -> None:
    number = whatsapp.add_number(phone_number_id="106540352242922")
    view = _view("whatsapp", access_token=number.access_token)
    with pytest.raises((FetchError, RegistrationFailed)) as refused:
        await WHATSAPP.register(_ctx(False, whatsapp_api_base=whatsapp.api_base), view)
    assert "not allowed" in str(refused.value)
    assert whatsapp.requests == []
    allowed = await WHATSAPP.register(_ctx(True, whatsapp_api_base=whatsapp.api_base), view)
    assert allowed.details
