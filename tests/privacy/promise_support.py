"""Shared pieces of the promise modules: a fake Google on 127.0.0.1 and its sign-in dance, and
row counts of every table (to show that a refused request wrote nothing anywhere)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, inspect, select

from lunogen.db import Base
from tests.conftest import BASE_URL
from tests.fakes.google_oidc import FakeGoogle, Identity
from tests.helpers import Api

CLIENT_ID = "promise-suite.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-promise-suite"
CONSENT = {"age_confirmed": True, "accept_terms": True, "accept_privacy": True}


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogle]:
    with FakeGoogle.running(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[f"{BASE_URL}/auth/google/callback"],
    ) as fake:
        yield fake


@pytest.fixture
def google(google_server: FakeGoogle) -> FakeGoogle:
    google_server.reset()
    google_server.client_secret = CLIENT_SECRET
    return google_server


def google_settings(google: FakeGoogle) -> dict[str, object]:
    """Sign-in with the fake; its profile pictures (on 127.0.0.1) may be fetched."""
    return {
        "google_client_id": CLIENT_ID,
        "google_client_secret": CLIENT_SECRET,
        "google_discovery_url": google.discovery_url,
        "allow_private_urls": True,
    }


async def google_sign_in(
    client: httpx.AsyncClient, google: FakeGoogle, identity: Identity
) -> httpx.Response:
    """The browser's round trip: our start page, Google's consent screen, our callback."""
    google.identity = identity
    start = await client.get("/auth/google/start")
    assert start.status_code == 302, start.text
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as provider:
        at_google = await provider.get(start.headers["location"])
    assert at_google.status_code == 302, at_google.text
    return await client.get(at_google.headers["location"])


async def table_counts(api: Api) -> dict[str, int]:
    """Rows per table, for every table of the schema the database has."""
    counts: dict[str, int] = {}
    async with api.app.state.sessionmaker() as session:
        connection = await session.connection()
        present = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        for table in Base.metadata.sorted_tables:
            if table.name in present:
                query = select(func.count()).select_from(table)
                counts[table.name] = int((await session.execute(query)).scalar_one())
    return counts
