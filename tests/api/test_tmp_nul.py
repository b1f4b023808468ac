from tests.helpers import Api


async def test_nul(api: Api) -> None:
    c = api.new_client()
    r = await api.register(c, "a@example.com", name="bad\x00name")
    print("REGISTER", r.status_code, r.text)
    r = await c.post("/api/v1/auth/login", data={"email": "a\x00@example.com", "password": "x\x00"})
    print("LOGINFORM", r.status_code, r.text)
    r = await c.post("/api/v1/auth/verify", json={"token": "abc\x00"})
    print("VERIFY", r.status_code, r.text)
    person = await api.sign_up()
    r = await person.client.get("/api/v1/agents/abc%00def")
    print("PATH", r.status_code, r.text)
    r = await person.client.get("/api/v1/audit?cursor=a%00")
    print("QUERY", r.status_code, r.text)
    deep = "[" * 100000 + "]" * 100000
    r = await person.client.post(
        "/api/v1/keys", content=deep, headers={**person.headers, "content-type": "application/json"}
    )
    print("DEEP", r.status_code, r.text[:300])
    r = await c.post(
        "/api/v1/auth/login", content=deep, headers={"content-type": "application/json"}
    )
    print("DEEP2", r.status_code, r.text[:300])
    r = await person.client.post(
        "/api/v1/keys",
        content=b"\xff\xfe{",
        headers={**person.headers, "content-type": "application/json"},
    )
    print("BADUTF", r.status_code, r.text[:300])
    r = await c.post(
        "/api/v1/auth/login", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    print("BADUTF2", r.status_code, r.text[:300])
    r = await c.post(
        "/api/v1/auth/login",
        content=b"email=%ff%fe&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    print("BADFORM", r.status_code, r.text[:200])


async def test_bad(api: Api) -> None:
    person = await api.sign_up()
    r = await person.client.post(
        "/api/v1/agents",
        content=b"{not json",
        headers={**person.headers, "content-type": "application/json"},
    )
    print("AGENTBAD", r.status_code, r.text[:300])
    r = await person.client.post(
        "/api/v1/agents",
        content=b"[1,2]",
        headers={**person.headers, "content-type": "application/json"},
    )
    print("AGENTLIST", r.status_code, r.text[:300])
    r = await person.client.post(
        "/api/v1/agents", content=b"{}", headers={**person.headers, "content-type": "text/plain"}
    )
    print("AGENTTEXT", r.status_code, r.text[:300])
