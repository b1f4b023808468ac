from __future__ import annotations

from tests.helpers import Api


async def test_sign_up_and_key(api: Api) -> None:
    person = await api.sign_up()
    me = await person.client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["setup_complete"] is True
    key = await api.create_key(person)
    keyed = api.key_client(key)
    response = await keyed.get("/api/v1/me")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "30"
