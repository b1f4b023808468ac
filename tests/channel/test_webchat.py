"""The web chat over HTTP, as its page and widget use it: the page and its headers, the visitor
token protocol, replies streamed as server-sent events, each visitor's history, rate limits."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from lunogen.agent.models import AgentChannel
from lunogen.channel.webchat import endpoints as webchat
from lunogen.channel.webchat import token as tokens
from lunogen.kit.crypto import Key, KeyRing
from lunogen.kit.time import utcnow
from lunogen.runtime.models import Message, Thread
from tests.agent.support import Dev, agent_body, create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api, sse_events

OWN = "http://testserver"  # LunoGen's origin in these tests (settings.public_url)
SHOP = "https://shop.example"
EVIL = "https://evil.example"


@dataclass
class Chat:
    api: Api
    dev: Dev
    agent: dict[str, Any]
    id: str
    http: httpx.AsyncClient

    async def session(
        self, visitor_id: str, *, origin: str | None = OWN, channel_id: str | None = None
    ) -> httpx.Response:
        headers = {"Origin": origin} if origin is not None else {}
        return await self.http.post(
            f"/chat/{channel_id or self.id}/session",
            json={"visitor_id": visitor_id},
            headers=headers,
        )

    async def token(self, visitor_id: str) -> str:
        response = await self.session(visitor_id)
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    async def send(
        self, token: str | None, text: str = "Hello", *, origin: str | None = OWN, **extra: Any
    ) -> httpx.Response:
        headers = {"Accept": "text/event-stream"}
        if origin is not None:
            headers["Origin"] = origin
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.post(
            f"/chat/{self.id}/messages", json={"text": text, **extra}, headers=headers
        )

    async def history(
        self, token: str, *, headers: dict[str, str] | None = None, query: str = ""
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {token}", "Sec-Fetch-Site": "same-origin"}
        if headers is not None:
            sent = {"Authorization": f"Bearer {token}", **headers}
        return await self.http.get(f"/chat/{self.id}/history{query}", headers=sent)


async def new_chat(
    api: Api, *, deploy: bool = True, tools: list[str] | None = None, **config: Any
) -> Chat:
    dev = await new_dev(api)
    channel = {"type": "webchat", "allowed_origins": [SHOP], "title": "Ask us", **config}
    extra: dict[str, Any] = {"tools": tools} if tools is not None else {}
    agent = await create_agent(dev, channels=[channel], **extra)
    if deploy:
        deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
        assert deployed.status_code == 200, deployed.text
    [created] = agent["channels"]
    return Chat(api=api, dev=dev, agent=agent, id=created["id"], http=api.new_client())


def visitor(n: int) -> str:
    return f"visitor{n:02d}" + "x" * 14


def directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}


# The page and its assets ---------------------------------------------------------------------


async def test_the_page_may_be_framed_by_exactly_the_allowed_origins(api: Api) -> None:
    chat = await new_chat(api, greeting="Hi! Ask me anything.")
    page = await chat.http.get(f"/chat/{chat.id}?embed=1&host={SHOP}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = directives(page.headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'self'", OWN, SHOP]
    assert policy["script-src"] == ["'self'"] and policy["default-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"] and policy["object-src"] == ["'none'"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert "x-frame-options" not in page.headers  # frame-ancestors decides
    assert "set-cookie" not in page.headers
    html = page.text
    assert '<h1 id="chat-title">Ask us</h1>' in html
    assert "Hi! Ask me anything." in html
    assert f'data-host-origin="{SHOP}"' in html
    # Accessible: a labelled input, a live region for new messages, a status line.
    assert '<label for="chat-input"' in html and 'id="chat-input"' in html
    assert 'aria-live="polite"' in html and 'role="status"' in html
    # Only our own script file: no inline script, nothing from another host.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/chat/chat.js" defer>']
    assert re.findall(r"(?:src|href)=\"(https?://[^\"]*)\"", html) == [f"{OWN}/"]
    assert f'<a href="{OWN}/" target="_blank" rel="noopener">Powered by LunoGen</a>' in html

    # Every other page keeps the app's policy.
    login = await chat.http.get("/login")
    assert directives(login.headers["content-security-policy"])["frame-ancestors"] == ["'none'"]
    assert login.headers["x-frame-options"] == "DENY"


async def test_the_page_posts_only_to_an_allowed_host_and_can_hide_powered_by(api: Api) -> None:
    chat = await new_chat(api)
    page = await chat.http.get(f"/chat/{chat.id}?embed=1&host={EVIL}")
    assert 'data-host-origin=""' in page.text  # never told to post to a site not allowed
    changed = await chat.dev.http.patch(
        f"/api/v1/agents/{chat.agent['id']}",
        json={"channels": [{"type": "webchat", "id": chat.id, "hide_powered_by": True}]},
    )
    assert changed.status_code == 200, changed.text
    page = await chat.http.get(f"/chat/{chat.id}")
    assert "Powered by" not in page.text
    assert directives(page.headers["content-security-policy"])["frame-ancestors"] == ["'self'", OWN]


async def test_an_unknown_chat_is_a_404_page(api: Api) -> None:
    client = api.new_client()
    missing = await client.get("/chat/6f1c1c44-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert "Chat not found" in missing.text
    assert missing.headers["x-frame-options"] == "DENY"
    # A channel of another type is not a chat.
    dev = await new_dev(api)
    agent = await create_agent(dev, channels=[{"type": "webhook"}])
    other = await client.get(f"/chat/{agent['channels'][0]['id']}")
    assert other.status_code == 404
    # Nor is a deleted agent's chat.
    chat = await new_chat(api)
    assert (await chat.dev.http.delete(f"/api/v1/agents/{chat.agent['id']}")).is_success
    assert (await client.get(f"/chat/{chat.id}")).status_code == 404
    assert (await chat.session(visitor(1))).status_code == 404


def _code(source: str) -> str:
    return re.sub(r"/\*.*?\*/", "", source, flags=re.S)


async def test_the_scripts_reach_only_lunogen_and_set_no_cookie(client: httpx.AsyncClient) -> None:
    widget = await client.get("/chat/widget.js")
    assert widget.status_code == 200
    assert widget.headers["content-type"].startswith("text/javascript")
    code = _code(widget.text)
    assert "new URL(script.src" in code  # LunoGen's origin is where the script came from
    assert not re.search(r"https?://", code)
    for touch in ("cookie", "localStorage", "sessionStorage", "innerHTML", "eval("):
        assert touch not in code, touch
    page_script = _code((await client.get("/chat/chat.js")).text)
    assert not re.search(r"https?://", page_script)
    assert "document.cookie" not in page_script and "innerHTML" not in page_script
    assert 'credentials: "omit"' in page_script
    css = await client.get("/chat/chat.css")
    assert css.headers["content-type"].startswith("text/css")
    assert "prefers-color-scheme: dark" in css.text
    assert all("set-cookie" not in r.headers for r in (widget, css))


# Sessions and tokens -------------------------------------------------------------------------


async def test_a_session_from_lunogen_or_an_allowed_site_gets_a_token(api: Api) -> None:
    chat = await new_chat(api)
    before = int(time.time())
    for origin in (OWN, SHOP, "https://SHOP.example:443"):
        response = await chat.session(visitor(1), origin=origin)
        assert response.status_code == 200, (origin, response.text)
        body = response.json()
        assert body["token_type"] == "Bearer" and body["visitor_id"] == visitor(1)
        assert before + 15 * 60 <= body["expires_at"] <= int(time.time()) + 15 * 60
        assert response.headers["cache-control"] == "no-store"
        assert "set-cookie" not in response.headers
        claims = tokens.verify(api.app.state.keyring, body["token"], channel_id=chat.id)
        assert (claims.channel_id, claims.visitor_id) == (chat.id, visitor(1))


async def test_a_session_from_another_origin_or_none_is_refused(api: Api) -> None:
    chat = await new_chat(api)
    refused = await chat.session(visitor(1), origin=EVIL)
    assert refused.status_code == 403
    assert refused.json()["error"] == "Origin not allowed"
    assert EVIL in refused.json()["message"] and "allowed_origins" in refused.json()["message"]
    for origin in (None, "null", "http://shop.example", "https://shop.example:8443"):
        response = await chat.session(visitor(1), origin=origin)
        assert response.status_code == 403, origin
    missing = await chat.session(visitor(1), origin=None)
    assert "no Origin header" in missing.json()["message"]
    # A message from a disallowed site is refused too, even with a good token.
    token = await chat.token(visitor(1))
    assert (await chat.send(token, origin=EVIL)).status_code == 403
    assert (await chat.send(token, origin=None)).status_code == 403


async def test_bad_session_requests_name_the_problem(api: Api) -> None:
    chat = await new_chat(api)
    for bad in ("short", "x" * 65, "has spaces in it here", "ünïcode-visitor-id-123"):
        response = await chat.session(bad)
        assert response.status_code == 422, bad
        assert response.json()["details"][0]["field"] == "visitor_id"
    broken = await chat.http.post(
        f"/chat/{chat.id}/session",
        content=b"{not json",
        headers={"Origin": OWN, "Content-Type": "application/json"},
    )
    assert broken.status_code == 400 and "JSON" in broken.json()["message"]
    extra = await chat.http.post(
        f"/chat/{chat.id}/session",
        json={"visitor_id": visitor(1), "admin": True},
        headers={"Origin": OWN},
    )
    assert extra.status_code == 422 and extra.json()["details"][0]["field"] == "admin"
    too_big = await chat.http.post(
        f"/chat/{chat.id}/session",
        content=b'{"visitor_id":"' + b"a" * 5000 + b'"}',
        headers={"Origin": OWN, "Content-Type": "application/json"},
    )
    assert too_big.status_code == 413


async def test_a_chat_whose_agent_is_not_running_answers_409(api: Api) -> None:
    draft = await new_chat(api, deploy=False)
    response = await draft.session(visitor(1))
    assert response.status_code == 409
    assert response.json()["status"] == "draft"

    chat = await new_chat(api)
    token = await chat.token(visitor(1))
    stopped = await chat.dev.http.post(f"/api/v1/agents/{chat.agent['id']}/stop")
    assert stopped.status_code == 200, stopped.text
    response = await chat.session(visitor(1))
    assert response.status_code == 409 and response.json()["status"] == "stopped"
    sent = await chat.send(token, "Anyone there?")
    assert sent.status_code == 409 and sent.json()["status"] == "stopped"
    async with api.app.state.sessionmaker() as session:
        assert (await session.execute(select(Message))).scalars().all() == []


async def test_a_disabled_chat_answers_409(api: Api) -> None:
    chat = await new_chat(api)
    token = await chat.token(visitor(1))
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(AgentChannel)
            .where(AgentChannel.id == chat.id)
            .values(disabled_at=utcnow(), disabled_reason="switched off")
        )
        await session.commit()
    assert (await chat.session(visitor(1))).status_code == 409
    response = await chat.send(token)
    assert response.status_code == 409 and response.json()["error"] == "Channel disabled"


async def test_expired_forged_missing_and_foreign_tokens_are_401(api: Api) -> None:
    chat = await new_chat(api)
    other = await new_chat(api)
    keyring: KeyRing = api.app.state.keyring
    good = await chat.token(visitor(1))
    expired, _ = tokens.issue(
        keyring, channel_id=chat.id, visitor_id=visitor(1), now=time.time() - 16 * 60
    )
    head, _, signature = good.rpartition(".")
    forged_signature = head + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    # A payload naming another visitor, under the original signature.
    version, key_id, _payload, sig = good.split(".")
    swapped_payload = tokens._b64e(
        f'{{"c":"{chat.id}","v":"{visitor(2)}","e":{int(time.time()) + 600}}}'.encode()
    )
    stranger = KeyRing([Key.generate()])
    unknown_key, _ = tokens.issue(stranger, channel_id=chat.id, visitor_id=visitor(1))
    foreign = await other.token(visitor(1))
    cases = {
        "the token has expired": expired,
        "signature is not valid": forged_signature,
        "signature is not valid ": f"{version}.{key_id}.{swapped_payload}.{sig}",
        "key this server no longer has": unknown_key,
        "belongs to another chat": foreign,
        "not a web chat visitor token": "lg_live_" + "0" * 64,
    }
    for reason, token in cases.items():
        for response in (await chat.send(token), await chat.history(token)):
            assert response.status_code == 401, reason
            assert response.json()["error"] == "Invalid visitor token"
            assert reason.strip() in response.json()["message"]
    missing = await chat.send(None)
    assert missing.status_code == 401 and missing.json()["error"] == "Visitor token required"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (await chat.send(good)).status_code == 200
    async with api.app.state.sessionmaker() as session:
        assert len((await session.execute(select(Message))).scalars().all()) == 2


def test_tokens_survive_a_key_rotation_and_refuse_bad_visitor_ids() -> None:
    old = Key.generate()
    token, expires_at = tokens.issue(KeyRing([old]), channel_id="c1", visitor_id=visitor(3))
    rotated = KeyRing([Key.generate(), old])  # a new primary; the old key still verifies
    claims = tokens.verify(rotated, token, channel_id="c1")
    assert claims == tokens.VisitorToken("c1", visitor(3), expires_at)
    assert token.split(".")[1] == old.id
    assert rotated.keys[0].id in tokens.issue(rotated, channel_id="c1", visitor_id=visitor(3))[0]
    with pytest.raises(tokens.VisitorTokenError, match="expired"):
        tokens.verify(rotated, token, channel_id="c1", now=expires_at)
    with pytest.raises(ValueError, match="visitor_id"):
        tokens.issue(rotated, channel_id="c1", visitor_id="bad id")


# Messages, streaming, history ----------------------------------------------------------------


async def test_a_reply_streams_as_server_sent_events(api: Api, openrouter: FakeOpenRouter) -> None:
    chat = await new_chat(api)
    token = await chat.token(visitor(1))
    openrouter.reply("Happy to help you today")
    response = await chat.send(token, "Can you help?", origin=SHOP)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["delta"] * 5 + ["done"]
    assert "".join(d["text"] for name, d in events if name == "delta") == "Happy to help you today"
    done = events[-1][1]
    assert done["text"] == "Happy to help you today" and done["reply_id"]
    # The visitor's thread: this channel, this visitor.
    assert openrouter.last_chat.body["stream"] is True
    assert openrouter.last_chat.messages[-1]["content"] == "Can you help?"
    async with api.app.state.sessionmaker() as session:
        thread = await session.get(Thread, done["thread_id"])
        assert thread is not None
        assert (thread.channel_key, thread.contact) == (
            f"webchat:{chat.id}",
            f"visitor:{visitor(1)}",
        )


async def test_a_message_sent_again_with_its_id_is_answered_once(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    chat = await new_chat(api)
    token = await chat.token(visitor(1))
    openrouter.reply("Only once")
    first = sse_events((await chat.send(token, "Hi", id="page-message-0001")).text)
    again = sse_events((await chat.send(token, "Hi", id="page-message-0001")).text)
    assert first[-1] == again[-1] and first[-1][0] == "done"
    assert first[-1][1]["text"] == "Only once"
    assert len(openrouter.chat_requests) == 1
    listed = (await chat.history(token)).json()["messages"]
    assert [m["role"] for m in listed] == ["user", "assistant"]
    # Another id is another message.
    openrouter.reply("Twice")
    other = sse_events((await chat.send(token, "Hi", id="page-message-0002")).text)
    assert other[-1][1]["text"] == "Twice"
    bad = await chat.send(token, "Hi", id="no spaces allowed")
    assert bad.status_code == 422 and "id" in bad.text


async def test_tool_activity_is_not_shown_to_visitors(api: Api, openrouter: FakeOpenRouter) -> None:
    chat = await new_chat(api, tools=["current_time"])
    token = await chat.token(visitor(1))
    openrouter.call_tool("current_time", {"timezone": "UTC"})
    openrouter.reply("It is noon")
    events = sse_events((await chat.send(token, "Time?")).text)
    names = [name for name, _ in events]
    assert "tool" not in names and names[-1] == "done"
    assert events[-1][1]["text"] == "It is noon"
    assert len(openrouter.chat_requests) == 2  # the tool did run


async def test_a_failed_turn_tells_the_visitor_without_the_owners_reasons(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    chat = await new_chat(api)
    token = await chat.token(visitor(1))
    openrouter.fail(400, "This model does not support that")
    events = sse_events((await chat.send(token)).text)
    assert [name for name, _ in events] == ["error"]
    error = events[0][1]
    assert error["retrying"] is False and error["message_id"]
    assert error["error"] == webchat._FAILED
    assert "model" not in str(error)


async def test_bad_messages_name_the_problem(api: Api) -> None:
    chat = await new_chat(api)
    token = await chat.token(visitor(1))
    for body, field in (({"text": ""}, "text"), ({"text": "x" * 32_001}, "text"), ({}, "text")):
        response = await chat.http.post(
            f"/chat/{chat.id}/messages",
            json=body,
            headers={"Origin": OWN, "Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 422, body
        assert response.json()["details"][0]["field"] == field
    nul = await chat.send(token, "a\u0000b")
    assert nul.status_code == 422
    huge = await chat.http.post(
        f"/chat/{chat.id}/messages",
        content=b'{"text":"' + b"a" * 300_000 + b'"}',
        headers={"Origin": OWN, "Authorization": f"Bearer {token}"},
    )
    assert huge.status_code == 413
    assert (await chat.send(token, "x" * 32_000)).status_code == 200


async def test_each_visitor_sees_only_their_own_history(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    chat = await new_chat(api)
    alice, bob = await chat.token(visitor(1)), await chat.token(visitor(2))
    openrouter.reply("Hi Alice")
    assert (await chat.send(alice, "I am Alice")).status_code == 200
    openrouter.reply("Hi Bob")
    assert (await chat.send(bob, "I am Bob")).status_code == 200
    openrouter.reply("Still here")
    assert (await chat.send(alice, "Again")).status_code == 200

    seen = (await chat.history(alice)).json()["messages"]
    assert [(m["role"], m["text"]) for m in seen] == [
        ("user", "I am Alice"),
        ("assistant", "Hi Alice"),
        ("user", "Again"),
        ("assistant", "Still here"),
    ]
    assert seen[1]["reply_to_id"] == seen[0]["id"] and seen[0]["status"] == "done"
    assert [m["text"] for m in (await chat.history(bob)).json()["messages"]] == [
        "I am Bob",
        "Hi Bob",
    ]
    last = (await chat.history(alice, query="?limit=1")).json()["messages"]
    assert [m["text"] for m in last] == ["Still here"]
    assert (await chat.history(alice, query="?limit=0")).status_code == 422
    fresh = await chat.token(visitor(3))
    assert (await chat.history(fresh)).json() == {"messages": []}
    # The same visitor id on another chat is another conversation.
    other = await new_chat(api)
    elsewhere = await other.token(visitor(1))
    assert (await other.history(elsewhere)).json() == {"messages": []}


async def test_history_checks_where_the_request_comes_from(api: Api) -> None:
    chat = await new_chat(api)
    token = await chat.token(visitor(1))
    # The framed page's GET carries no Origin; Fetch Metadata says it is same-origin.
    assert (await chat.history(token)).status_code == 200
    assert (await chat.history(token, headers={"Origin": SHOP})).status_code == 200
    for headers in ({}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": EVIL}):
        response = await chat.history(token, headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["error"] == "Origin not allowed"


# Rate limits ---------------------------------------------------------------------------------


async def test_messages_are_limited_per_visitor_and_per_chat(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        webchat, "LIMITS", webchat.WebchatLimits(messages_per_visitor=2, messages_per_channel=3)
    )
    chat = await new_chat(api)
    first, second = await chat.token(visitor(1)), await chat.token(visitor(2))
    assert (await chat.send(first, "one")).status_code == 200
    assert (await chat.send(first, "two")).status_code == 200
    refused = await chat.send(first, "three")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["retry_after"] == int(refused.headers["retry-after"])
    assert "too fast" in refused.json()["message"]
    # Another visitor has a budget of their own, until the chat's budget runs out.
    assert (await chat.send(second, "hello")).status_code == 200
    busy = await chat.send(second, "again")
    assert busy.status_code == 429 and "very busy" in busy.json()["message"]
    # Another chat is not affected.
    other = await new_chat(api)
    assert (await other.send(await other.token(visitor(1)), "hi")).status_code == 200
    async with api.app.state.sessionmaker() as session:
        texts = {m.content for m in (await session.execute(select(Message))).scalars()}
        assert len(texts) == 2 * 4  # four accepted messages and their replies, nothing refused


async def test_sessions_are_limited_per_address(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webchat, "LIMITS", webchat.WebchatLimits(sessions_per_address=3))
    chat = await new_chat(api)
    for n in range(3):
        assert (await chat.session(visitor(n))).status_code == 200
    refused = await chat.session(visitor(9))  # a fresh visitor id does not help
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers and "your network" in refused.json()["message"]


async def test_only_pro_may_hide_the_powered_by_link(api: Api) -> None:
    free = await new_dev(api, plan="free")
    hidden = {"type": "webchat", "allowed_origins": [SHOP], "hide_powered_by": True}
    refused = await free.http.post("/api/v1/agents", json=agent_body(channels=[hidden]))
    assert refused.status_code == 403, refused.text
    assert "Powered by LunoGen" in refused.json()["message"]
    shown = {**hidden, "hide_powered_by": False}
    created = await free.http.post("/api/v1/agents", json=agent_body(channels=[shown]))
    assert created.status_code == 201, created.text
    patched = await free.http.patch(
        f"/api/v1/agents/{created.json()['id']}",
        json={"channels": [{**hidden, "id": created.json()["channels"][0]["id"]}]},
    )
    assert patched.status_code == 403, patched.text
    pro = await new_dev(api, plan="pro")
    allowed = await pro.http.post("/api/v1/agents", json=agent_body(channels=[hidden]))
    assert allowed.status_code == 201, allowed.text
    page = f"/chat/{allowed.json()['channels'][0]['id']}"
    assert "Powered by LunoGen" not in (await pro.http.get(page)).text
    await api.set_plan(pro.person, "free")  # a downgrade shows the link again
    assert "Powered by LunoGen" in (await pro.http.get(page)).text
