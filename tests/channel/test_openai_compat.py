"""The OpenAI-compatible endpoint, driven by the real `openai` SDK over real HTTP.

Every test talks to the app served by uvicorn (`live_server`) as a chat front-end would: the
SDK's `AsyncOpenAI(base_url=<server>/v1, api_key=lg_live_…)`, with its retries off so that each
error is seen as the server sent it. The model behind the agents is the fake OpenRouter.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.account.models import User
from lunogen.channel.openai_compat import replies
from lunogen.channel.openai_compat.agents import slug_of
from lunogen.config import Settings
from lunogen.kit.crypto import load_keyring
from lunogen.notification.models import OutboundEmail
from lunogen.runtime.events import RedisTurnEvents, TurnEvents
from lunogen.runtime.models import Message
from tests.agent.support import MODEL
from tests.billing.support import set_available
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import PASSWORD

_TOKEN = re.compile(r"token=([A-Za-z0-9_\-]+)")
Sessions = async_sessionmaker[AsyncSession]


@dataclass
class Tenant:
    """A verified developer on the live server: a signed-in browser, a `full` key client."""

    base: str
    browser: httpx.AsyncClient
    http: httpx.AsyncClient
    user_id: str
    full_key: str = ""
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    async def key(self, scopes: list[str]) -> tuple[str, str]:
        """A new key with `scopes`: (key, key id)."""
        created = await self.browser.post(
            "/api/v1/keys",
            json={"name": "openai", "scopes": scopes},
            headers={"X-CSRF-Token": self.browser.cookies["lg_csrf"]},
        )
        assert created.status_code == 201, created.text
        return str(created.json()["key"]), str(created.json()["id"])

    async def agent(self, name: str = "Support bot", *, deploy: bool = True) -> str:
        body = {"name": name, "model": MODEL, "instructions": "Be kind."}
        created = await self.http.post("/api/v1/agents", json=body)
        assert created.status_code == 201, created.text
        agent_id = str(created.json()["id"])
        if deploy:
            deployed = await self.http.post(f"/api/v1/agents/{agent_id}/deploy")
            assert deployed.status_code == 200, deployed.text
        return agent_id

    def sdk(self, key: str) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0)
        self.clients.append(client)
        return client

    async def threads(self, agent_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/api/v1/agents/{agent_id}/threads")
        assert response.status_code == 200, response.text
        return list(response.json()["data"])

    async def texts(self, agent_id: str, thread_id: str) -> list[str]:
        response = await self.http.get(f"/api/v1/agents/{agent_id}/threads/{thread_id}/messages")
        assert response.status_code == 200, response.text
        return [m["text"] for m in response.json()["data"]]


class Live:
    """Signs developers up on the live server (reading the emailed link from the database)."""

    def __init__(self, base: str, settings: Settings, sessions: Sessions) -> None:
        self.base = base
        self.settings = settings
        self.sessions = sessions
        self.tenants: list[Tenant] = []
        self._count = 0

    async def tenant(self, *, plan: str = "pro") -> Tenant:
        self._count += 1
        email = f"openai{self._count}@example.com"
        browser = httpx.AsyncClient(base_url=self.base, timeout=30)
        registered = await browser.post(
            "/api/v1/auth/register",
            json={
                "name": "OpenAI Dev",
                "email": email,
                "password": PASSWORD,
                "age_confirmed": True,
                "accept_terms": True,
                "accept_privacy": True,
            },
        )
        assert registered.status_code == 201, registered.text
        keyring = load_keyring(self.settings.secret_keys, self.settings.data_dir)
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(OutboundEmail).where(OutboundEmail.to_address == email)
                )
            ).scalar_one()
            await session.execute(update(User).where(User.email == email).values(plan=plan))
            await session.commit()
        match = _TOKEN.search(keyring.decrypt(row.body_encrypted))
        assert match
        assert (await browser.post("/api/v1/auth/verify", json={"token": match[1]})).is_success
        login = await browser.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        tenant = Tenant(
            base=self.base, browser=browser, http=browser, user_id=str(login.json()["id"])
        )
        key, _ = await tenant.key(["full"])
        tenant.full_key = key
        tenant.http = httpx.AsyncClient(
            base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.tenants.append(tenant)
        return tenant

    async def aclose(self) -> None:
        for tenant in self.tenants:
            for client in tenant.clients:
                await client.close()
            await tenant.http.aclose()
            await tenant.browser.aclose()


@pytest.fixture
async def live(live_server: str, settings: Settings, sm: Sessions) -> AsyncIterator[Live]:
    helper = Live(live_server, settings, sm)
    yield helper
    await helper.aclose()


async def _executor(live: Live) -> tuple[Tenant, openai.AsyncOpenAI, str]:
    """A Pro developer, an SDK client on a key with only `agents:execute`, and its key id."""
    tenant = await live.tenant()
    key, key_id = await tenant.key(["agents:execute"])
    return tenant, tenant.sdk(key), key_id


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# -- answers --------------------------------------------------------------------------------


async def test_a_reply_through_the_sdk_with_usage_from_the_turns_calls(
    live: Live, openrouter: FakeOpenRouter
) -> None:
    tenant, sdk, key_id = await _executor(live)
    agent_id = await tenant.agent()
    openrouter.reply("Hello there!", prompt_tokens=21, completion_tokens=4)
    completion = await sdk.chat.completions.create(
        model=f"agent/{agent_id}",
        messages=[
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": "Earlier question"},
            {"role": "assistant", "content": "Earlier answer"},
            {"role": "user", "content": "Hi"},
        ],
        temperature=0.2,  # accepted and ignored, as are max_tokens, seed, stop
        max_tokens=5,
        seed=7,
        stop=["\n"],
    )
    assert completion.object == "chat.completion"
    assert completion.model == f"agent/{agent_id}"
    assert completion.id.startswith("chatcmpl-")
    assert completion.created > 0
    [choice] = completion.choices
    assert (choice.index, choice.finish_reason) == (0, "stop")
    assert (choice.message.role, choice.message.content) == ("assistant", "Hello there!")
    assert completion.usage is not None
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (21, 4, 25)
    # Only the last message reached the agent: its own instructions, not the client's history.
    sent = openrouter.last_chat.messages
    assert sent[-1] == {"role": "user", "content": "Hi"}
    assert not any(
        "pirate" in str(m.get("content")) or "Earlier" in str(m.get("content")) for m in sent
    )
    assert openrouter.last_chat.body["max_tokens"] != 5
    # One conversation per key by default, on the `openai` channel; the id names its message.
    [thread] = await tenant.threads(agent_id)
    assert (thread["channel"], thread["contact"]) == ("openai", f"key:{key_id}")
    assert await tenant.texts(agent_id, thread["id"]) == ["Hi", "Hello there!"]
    assert completion.id == f"chatcmpl-{_inbound_id(await _messages(live, thread['id']))}"


async def _messages(live: Live, thread_id: str) -> list[Message]:
    async with live.sessions() as session:
        rows = await session.execute(
            select(Message).where(Message.thread_id == thread_id).order_by(Message.seq)
        )
        return list(rows.scalars())


def _inbound_id(messages: list[Message]) -> str:
    return next(m.id for m in reversed(messages) if m.role == "user")


async def test_a_streamed_reply_through_the_sdk(live: Live, openrouter: FakeOpenRouter) -> None:
    tenant, sdk, _ = await _executor(live)
    agent_id = await tenant.agent()
    openrouter.reply("One two three four", prompt_tokens=9, completion_tokens=4)
    stream = await sdk.chat.completions.create(
        model=f"agent/{agent_id}",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Count"}]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {f"agent/{agent_id}"}
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(contents) == "One two three four"
    assert len(contents) == 4  # written as the model wrote it, not in one piece
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    assert chunks[-2] is finishing[0]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        9,
        4,
        13,
    )
    assert all(c.usage is None for c in chunks[:-1])
    [thread] = await tenant.threads(agent_id)
    assert await tenant.texts(agent_id, thread["id"]) == ["Count", "One two three four"]


async def test_the_stream_on_the_wire_ends_with_done(
    live: Live, openrouter: FakeOpenRouter
) -> None:
    tenant, _, _ = await _executor(live)
    key, _ = await tenant.key(["agents:execute"])
    agent_id = await tenant.agent()
    openrouter.reply("Short answer")
    body = {"model": f"agent/{agent_id}", "messages": _user("Hi"), "stream": True}
    async with (
        httpx.AsyncClient(base_url=live.base, timeout=30) as client,
        client.stream(
            "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-lunogen-thread-id"]
        raw = "".join([part async for part in response.aiter_text()])
    lines = [line for line in raw.split("\n\n") if line and not line.startswith(":")]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "usage" not in chunks[0]  # only asked for with stream_options.include_usage
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


async def test_text_written_before_a_tool_ran_is_kept_apart_from_the_reply(
    live: Live, openrouter: FakeOpenRouter
) -> None:
    tenant, sdk, _ = await _executor(live)
    created = await tenant.http.post(
        "/api/v1/agents",
        json={"name": "Clock", "model": MODEL, "tools": ["current_time"]},
    )
    agent_id = created.json()["id"]
    assert (await tenant.http.post(f"/api/v1/agents/{agent_id}/deploy")).status_code == 200
    openrouter.call_tool("current_time", {"timezone": "UTC"}, text="Let me look.")
    openrouter.reply("It is noon.")
    stream = await sdk.chat.completions.create(
        model=f"agent/{agent_id}", messages=_user("Time?"), stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Let me look.\n\nIt is noon."
    [thread] = await tenant.threads(agent_id)
    assert await tenant.texts(agent_id, thread["id"]) == ["Time?", "It is noon."]


# -- models -----------------------------------------------------------------------------------


async def test_models_lists_the_callers_agents_only(live: Live) -> None:
    tenant, sdk, _ = await _executor(live)
    first = await tenant.agent("Support Bot (EU)")
    second = await tenant.agent("Draft one", deploy=False)
    other = await live.tenant()
    foreign = await other.agent("Support Bot (EU)")
    page = await sdk.models.list()
    listed = {m.id: m for m in page.data}
    assert set(listed) == {f"agent/{first}", f"agent/{second}"}
    assert f"agent/{foreign}" not in listed
    model = listed[f"agent/{first}"]
    assert (model.object, model.owned_by) == ("model", "lunogen")
    assert model.created > 0
    extra = model.model_dump()
    assert (extra["name"], extra["slug"], extra["status"]) == (
        "Support Bot (EU)",
        "agent/support-bot-eu",
        "running",
    )
    assert listed[f"agent/{second}"].model_dump()["status"] == "draft"
    found = await sdk.models.retrieve("agent/support-bot-eu")
    assert found.id == f"agent/{first}"
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.models.retrieve(f"agent/{foreign}")
    assert caught.value.code == "model_not_found"


def test_slugs_are_the_name_lowercased_with_dashes() -> None:
    assert slug_of("Support Bot (EU)") == "support-bot-eu"
    assert slug_of("  --Ünïcode__bot 2.0!! ") == "n-code-bot-2-0"
    assert slug_of("助手") == ""


async def test_a_slug_names_the_agent_and_an_ambiguous_one_is_refused(
    live: Live, openrouter: FakeOpenRouter
) -> None:
    tenant, sdk, _ = await _executor(live)
    agent_id = await tenant.agent("Support Bot (EU)")
    twins = [await tenant.agent("Twin"), await tenant.agent("twin!")]
    openrouter.reply("By slug")
    completion = await sdk.chat.completions.create(
        model="agent/Support-Bot-EU", messages=_user("Hello")
    )
    assert completion.choices[0].message.content == "By slug"
    assert completion.model == "agent/Support-Bot-EU"  # as the client asked
    assert [t["id"] for t in await tenant.threads(agent_id)]
    with pytest.raises(openai.BadRequestError) as ambiguous:
        await sdk.chat.completions.create(model="agent/twin", messages=_user("Hello"))
    assert ambiguous.value.code == "ambiguous_model"
    assert ambiguous.value.param == "model"
    assert all(twin in ambiguous.value.message for twin in twins)
    for unknown in ("agent/nobody", "support-bot-eu", f"{agent_id}", "agent/", "gpt-4o"):
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.chat.completions.create(model=unknown, messages=_user("Hello"))
        assert caught.value.code == "model_not_found", unknown
        assert caught.value.status_code == 404


# -- conversations ----------------------------------------------------------------------------


async def test_the_user_field_and_the_contact_header_choose_the_conversation(
    live: Live, openrouter: FakeOpenRouter
) -> None:
    tenant, sdk, key_id = await _executor(live)
    agent_id = await tenant.agent()
    model = f"agent/{agent_id}"
    # Nothing queued: the fake model echoes the last message it is sent.
    await sdk.chat.completions.create(model=model, messages=_user("alice one"), user="alice")
    await sdk.chat.completions.create(model=model, messages=_user("bob one"), user="bob")
    again = await sdk.chat.completions.create(
        model=model, messages=_user("alice two"), user="alice"
    )
    assert again.choices[0].message.content == "alice two"
    # Alice's second turn remembered her first exchange, and knew nothing of Bob's.
    remembered = [str(m.get("content")) for m in openrouter.last_chat.messages]
    assert "alice one" in remembered and "bob one" not in remembered
    await sdk.chat.completions.create(
        model=model,
        messages=_user("carol one"),
        user="alice",  # the header wins over the field
        extra_headers={"X-LunoGen-Contact": "carol"},
    )
    await sdk.chat.completions.create(model=model, messages=_user("by key"), user="  ")
    threads = {t["contact"]: t for t in await tenant.threads(agent_id)}
    assert set(threads) == {"alice", "bob", "carol", f"key:{key_id}"}
    assert {t["channel"] for t in threads.values()} == {"openai"}
    assert await tenant.texts(agent_id, threads["alice"]["id"]) == [
        "alice one",
        "alice one",
        "alice two",
        "alice two",
    ]
    assert await tenant.texts(agent_id, threads["carol"]["id"]) == ["carol one", "carol one"]
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(model=model, messages=_user("x"), user="u" * 201)
    assert (caught.value.param, caught.value.code) == ("user", "string_above_max_length")


# -- errors -----------------------------------------------------------------------------------


async def test_credentials_and_scopes_fail_in_openais_shape(live: Live) -> None:
    tenant, sdk, _ = await _executor(live)
    agent_id = await tenant.agent()
    messages = _user("Hi")
    wrong = tenant.sdk("lg_live_" + "0" * 64)
    with pytest.raises(openai.AuthenticationError) as caught:
        await wrong.chat.completions.create(model=f"agent/{agent_id}", messages=messages)
    assert caught.value.code == "invalid_api_key"
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["param"]) == ("invalid_request_error", None)
    assert "lg_live_" in body["message"]
    with pytest.raises(openai.AuthenticationError):
        await wrong.models.list()
    read_key, _ = await tenant.key(["agents:read"])
    reader = tenant.sdk(read_key)
    for call in (
        reader.chat.completions.create(model=f"agent/{agent_id}", messages=messages),
        reader.models.list(),
    ):
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await call
        assert denied.value.code == "insufficient_scope"
        assert "agents:execute" in denied.value.message
    # Without any key (a browser session's cookie is no key here).
    async with httpx.AsyncClient(base_url=live.base, cookies=tenant.browser.cookies) as browser:
        response = await browser.get("/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    # A model of another tenant looks like no model at all.
    other = await live.tenant()
    foreign = await other.agent()
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model=f"agent/{foreign}", messages=messages)
    assert missing.value.code == "model_not_found"
    assert await other.threads(foreign) == []


async def test_bad_requests_name_the_parameter(live: Live, openrouter: FakeOpenRouter) -> None:
    tenant, sdk, _ = await _executor(live)
    model = f"agent/{await tenant.agent()}"
    cases: list[tuple[dict[str, Any], str | None, str | None]] = [
        ({"n": 2}, "n", "unsupported_parameter"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            "tools",
            "unsupported_parameter",
        ),
        ({"tool_choice": "required"}, "tool_choice", "unsupported_parameter"),
        ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_parameter"),
        ({"logprobs": True}, "logprobs", "unsupported_parameter"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Look"},
                            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1]",
            "unsupported_content",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hel"},
                ]
            },
            "messages[1].role",
            "invalid_value",
        ),
        ({"messages": _user("   ")}, "messages[0].content", "invalid_value"),
        ({"messages": _user("x" * 32_001)}, "messages[0].content", "string_above_max_length"),
        ({"messages": []}, "messages", "invalid_value"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_value"),
        ({"stream": "yes"}, "stream", "invalid_value"),
        ({"messages": ["Hi"]}, "messages[0]", "invalid_value"),
        (
            {"stream_options": {"include_usage": "x"}},
            "stream_options.include_usage",
            "invalid_value",
        ),
    ]
    for extra, param, code in cases:
        body: dict[str, Any] = {"model": model, "messages": _user("Hi"), **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(**body)
        assert (caught.value.param, caught.value.code) == (param, code), extra
        assert caught.value.type == "invalid_request_error"
    assert openrouter.chat_requests == []  # none of them reached the agent
    # Missing fields and a body that is not JSON are 400s in the same shape.
    async with httpx.AsyncClient(base_url=live.base) as client:
        headers = {"Authorization": f"Bearer {sdk.api_key}", "Content-Type": "application/json"}
        missing = await client.post(
            "/v1/chat/completions", json={"messages": _user("Hi")}, headers=headers
        )
        broken = await client.post("/v1/chat/completions", content=b'{"model": ', headers=headers)
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "model"
    assert missing.json()["error"]["code"] == "missing_required_parameter"
    assert broken.status_code == 400
    assert set(broken.json()["error"]) == {"message", "type", "param", "code"}


async def test_a_long_history_fits_in_the_body_limit(
    live: Live, openrouter: FakeOpenRouter
) -> None:
    tenant, sdk, _ = await _executor(live)
    model = f"agent/{await tenant.agent()}"
    turn = [
        {"role": "user", "content": "q" * 30_000},
        {"role": "assistant", "content": "a" * 30_000},
    ]
    history: list[Any] = turn * 40  # 2.4 MB: over the app's default 1 MiB, as long chats get
    completion = await sdk.chat.completions.create(
        model=model, messages=[*history, *_user("Still there?")]
    )
    assert completion.choices[0].message.content == "Still there?"  # the fake echoes
    assert len(openrouter.last_chat.messages) == 2  # instructions and the last message only


async def test_an_agent_that_is_not_running_is_a_conflict(live: Live) -> None:
    tenant, sdk, _ = await _executor(live)
    draft = await tenant.agent(deploy=False)
    for stream in (False, True):
        with pytest.raises(openai.ConflictError) as caught:
            await sdk.chat.completions.create(
                model=f"agent/{draft}", messages=_user("Hi"), stream=stream
            )
        assert caught.value.code == "agent_not_running"
        assert caught.value.response.headers["x-should-retry"] == "false"


async def test_no_credits_is_insufficient_quota_and_not_retried(
    live: Live, openrouter: FakeOpenRouter
) -> None:
    for stream in (False, True):  # a refusal pauses the owner's agents: one owner each
        tenant, _, _ = await _executor(live)
        key, _ = await tenant.key(["agents:execute"])
        agent_id = await tenant.agent()
        await set_available(live.sessions, tenant.user_id, 1)  # one micro-credit
        retrying = openai.AsyncOpenAI(base_url=f"{live.base}/v1", api_key=key, max_retries=2)
        tenant.clients.append(retrying)
        with pytest.raises(openai.RateLimitError) as caught:
            await retrying.chat.completions.create(
                model=f"agent/{agent_id}", messages=_user("Hi"), stream=stream
            )
        assert caught.value.code == "insufficient_quota"
        assert caught.value.type == "insufficient_quota"
        assert "credits" in caught.value.message
        [thread] = await tenant.threads(agent_id)
        assert await tenant.texts(agent_id, thread["id"]) == ["Hi"]  # the SDK did not resend
    assert openrouter.chat_requests == []


async def test_the_plans_rate_limit_is_a_rate_limit_error_with_retry_after(live: Live) -> None:
    tenant = await live.tenant(plan="free")
    sdk = tenant.sdk(tenant.full_key)  # `full` grants agents:execute; Free has one key
    for _ in range(30):  # the Free plan's requests per minute
        await sdk.models.list()
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.models.list()
    assert caught.value.code == "rate_limit_exceeded"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.response.headers["x-ratelimit-limit"] == "30"


async def test_a_failed_turn_is_a_server_error_the_sdk_does_not_resend(
    live: Live, openrouter: FakeOpenRouter
) -> None:
    tenant, _, _ = await _executor(live)
    key, _ = await tenant.key(["agents:execute"])
    agent_id = await tenant.agent()
    retrying = openai.AsyncOpenAI(base_url=f"{live.base}/v1", api_key=key, max_retries=2)
    tenant.clients.append(retrying)
    openrouter.fail(400, "The provider refused the request")
    with pytest.raises(openai.InternalServerError) as caught:
        await retrying.chat.completions.create(model=f"agent/{agent_id}", messages=_user("Hi"))
    assert caught.value.status_code == 502
    assert caught.value.code == "agent_failed"
    assert "refused" in caught.value.message
    [thread] = await tenant.threads(agent_id)
    assert await tenant.texts(agent_id, thread["id"]) == ["Hi"]  # sent once, not retried


async def test_a_stream_broken_after_text_was_sent_ends_with_an_error_event(
    live: Live, openrouter: FakeOpenRouter
) -> None:
    tenant, sdk, _ = await _executor(live)
    agent_id = await tenant.agent()
    openrouter.break_stream("Half an ans")
    stream = await sdk.chat.completions.create(
        model=f"agent/{agent_id}", messages=_user("Hello"), stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert "".join(received) == "Half an ans"
    assert caught.value.code == "reply_interrupted"


async def test_a_turn_retried_before_any_text_was_sent_is_waited_for(
    live: Live, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lunogen.runtime.turn import store

    monkeypatch.setattr(store, "RETRY_BACKOFF", (timedelta(0),) * 3)
    tenant, sdk, _ = await _executor(live)
    agent_id = await tenant.agent()
    openrouter.break_stream("")  # failed after the provider took it: the turn is retried
    openrouter.reply("Second try")
    completion = await sdk.chat.completions.create(model=f"agent/{agent_id}", messages=_user("Hi"))
    assert completion.choices[0].message.content == "Second try"
    openrouter.break_stream("")
    openrouter.reply("Streamed second try")
    stream = await sdk.chat.completions.create(
        model=f"agent/{agent_id}", messages=_user("Again"), stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Streamed second try"


async def test_a_reply_whose_events_went_missing_is_read_from_the_database(
    live: Live, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost(*_args: Any, **_kwargs: Any) -> None:
        return None

    monkeypatch.setattr(TurnEvents, "publish", lost)
    monkeypatch.setattr(RedisTurnEvents, "publish", lost)
    tenant, sdk, _ = await _executor(live)
    agent_id = await tenant.agent()
    openrouter.reply("Found in the database", prompt_tokens=5, completion_tokens=4)
    completion = await sdk.chat.completions.create(model=f"agent/{agent_id}", messages=_user("a"))
    assert completion.choices[0].message.content == "Found in the database"
    openrouter.reply("Streamed from the database")
    stream = await sdk.chat.completions.create(
        model=f"agent/{agent_id}",
        messages=_user("b"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed from the database"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_a_reply_not_ready_in_time_is_a_gateway_timeout(
    live: Live, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replies, "WAIT_SECONDS", 1.0)
    tenant, sdk, _ = await _executor(live)
    agent_id = await tenant.agent()
    openrouter.stall(20, times=2)
    try:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as caught:
                await sdk.chat.completions.create(
                    model=f"agent/{agent_id}", messages=_user(f"slow {stream}"), stream=stream
                )
            assert (caught.value.status_code, caught.value.code) == (504, "reply_timeout")
            thread_id = caught.value.response.headers["x-lunogen-thread-id"]
            assert thread_id in caught.value.message
    finally:
        openrouter.release_stalls()


def test_streamed_text_is_finished_from_the_whole_reply() -> None:
    missing = replies.StreamedText()  # every delta lost (or a recorded call replayed)
    assert missing.rest_of("All of it") == "All of it"
    partial = replies.StreamedText()
    assert partial.delta("All ") == "All "
    assert partial.rest_of("All of it") == "of it"
    tools = replies.StreamedText()
    assert tools.delta("Looking.") == "Looking."
    tools.tool_ran()
    assert tools.rest_of("Found it") == "\n\nFound it"
    assert tools.delta("Found") == "\n\nFound"
    assert tools.rest_of("Found it") == " it"
    astray = replies.StreamedText()
    astray.delta("Fou")
    assert astray.rest_of("Something else") == ""  # what was sent cannot be taken back


# -- no input makes a 5xx -----------------------------------------------------------------------

# No NUL characters: the middleware in front of every route refuses them (a 422 of our own shape).
_text = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=30)
_number = st.floats(allow_nan=False, allow_infinity=False)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _text}),
    st.fixed_dictionaries({"type": st.sampled_from(["image_url", "input_audio", "file"])}),
    _json,
)
_message = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", "developer", 3]),
            "content": st.one_of(_text, st.lists(_part, max_size=3), _json),
        }
    ),
    _json,
)


_raw = st.binary(max_size=40).filter(lambda b: b"\x00" not in b)


def _bodies(model: str) -> st.SearchStrategy[Any]:
    fields = {
        "model": st.one_of(st.just(model), _text, _json),
        "messages": st.one_of(st.lists(_message, max_size=3), _json),
    }
    optional = {
        "stream": st.one_of(st.booleans(), _json),
        "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), _json),
        "user": st.one_of(_text, _json),
        "n": st.one_of(st.integers(-2, 3), _json),
        "tools": _json,
        "response_format": _json,
        "temperature": _json,
    }
    return st.one_of(st.fixed_dictionaries(fields, optional=optional), _json)


async def test_no_request_body_makes_a_server_error(live: Live) -> None:
    tenant, sdk, _ = await _executor(live)
    model = f"agent/{await tenant.agent()}"
    headers = {"Authorization": f"Bearer {sdk.api_key}"}
    seen: list[int] = []

    def fuzz() -> None:
        with httpx.Client(base_url=live.base, headers=headers, timeout=30) as client:

            @given(
                body=_bodies(model),
                raw=st.one_of(st.none(), _raw),
            )
            @example(body={"model": model, "messages": _user("Hi")}, raw=None)
            @example(body={"model": "agent/nobody", "messages": _user("Hi")}, raw=None)
            @settings(
                max_examples=80,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(body: Any, raw: bytes | None) -> None:
                if raw is not None:
                    sent = client.post(
                        "/v1/chat/completions",
                        content=raw,
                        headers={"Content-Type": "application/json"},
                    )
                else:
                    sent = client.post("/v1/chat/completions", json=body)
                seen.append(sent.status_code)
                assert sent.status_code < 500, sent.text
                if sent.status_code >= 400:
                    error = sent.json()["error"]
                    assert isinstance(error, dict) and isinstance(error["message"], str), error
                    assert set(error) == {"message", "type", "param", "code"}

            check()

    await asyncio.to_thread(fuzz)
    assert len(seen) >= 80  # the run went to its end
    assert {200, 400, 404} <= set(seen)
