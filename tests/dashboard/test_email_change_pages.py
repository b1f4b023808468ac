"""Settings → Change email, used as a browser would: post the form with its CSRF field, see the
pending change, open the emailed link (signing in on the way), confirm, see the new address."""

from __future__ import annotations

import html
import re

import httpx
from sqlalchemy import select, update

from lunogen.account.models import User
from tests.account.support import execute, rows
from tests.helpers import PASSWORD, Api, Signed

LINK = re.compile(r"http://testserver(/settings/email/confirm/[A-Za-z0-9_\-]+)")


async def _post(person: Signed, path: str, **fields: str) -> httpx.Response:
    return await person.client.post(path, data={"csrf_token": person.csrf, **fields})


async def _link_to(api: Api, address: str) -> str:
    [(_row, body)] = await api.emails(address)
    match = LINK.search(body)
    assert match, body
    return match.group(1)


async def test_the_email_is_changed_from_settings_with_the_pending_change_shown(
    api: Api,
) -> None:
    person = await api.sign_up()
    settings = (await person.client.get("/settings")).text
    assert 'action="/settings/email"' in settings and 'name="new_email"' in settings
    assert 'id="email-pending"' not in settings

    asked = await _post(person, "/settings/email", new_email="Ada@Example.org", password=PASSWORD)
    assert asked.status_code == 303, asked.text
    assert asked.headers["location"] == "/settings?outcome=email-sent"
    shown = (await person.client.get(asked.headers["location"])).text
    assert "We sent a link to the new address" in shown
    pending = re.search(
        r'<p class="warning wrap" role="status" id="email-pending">(.*?)</p>', shown
    )
    assert pending and "ada@example.org" in pending.group(1)
    assert f"<dd>{person.email}</dd>" in shown  # unchanged until the link is opened

    link = await _link_to(api, "ada@example.org")
    page = await person.client.get(link)
    assert page.status_code == 200
    assert f'action="{link}"' in page.text and "Use ada@example.org" in page.text
    done = await _post(person, link)
    assert done.status_code == 303 and done.headers["location"] == "/settings?outcome=email"
    after = (await person.client.get(done.headers["location"])).text
    assert "Email address changed." in after and "<dd>ada@example.org</dd>" in after
    assert 'id="email-pending"' not in after
    log = (await person.client.get("/security")).text
    assert "Email address changed" in log
    assert "Email address change requested" in log

    used = await person.client.get(link)
    assert used.status_code == 400 and "Use ada@example.org" not in used.text
    again = await _post(person, link)
    assert again.status_code == 400 and 'role="alert"' in again.text


async def test_refusals_show_the_form_again_with_the_reason(api: Api) -> None:
    person = await api.sign_up()
    other = await api.sign_up()
    wrong = await _post(person, "/settings/email", new_email="x@example.org", password="nope")
    assert wrong.status_code == 400
    assert 'id="email-error" role="alert"' in wrong.text
    assert "Your password is wrong" in wrong.text and 'value="x@example.org"' in wrong.text
    taken = await _post(person, "/settings/email", new_email=other.email, password=PASSWORD)
    assert taken.status_code == 409
    assert f"{other.email} belongs to another LunoGen account" in html.unescape(taken.text)
    malformed = await _post(person, "/settings/email", new_email="nope", password=PASSWORD)
    assert malformed.status_code == 422 and "New email address:" in malformed.text
    no_csrf = await person.client.post(
        "/settings/email", data={"new_email": "y@example.org", "password": PASSWORD}
    )
    assert no_csrf.status_code == 403
    assert await api.emails("x@example.org") == [] and await api.emails("y@example.org") == []
    [email] = await rows(api, select(User.email).where(User.id == person.id))
    assert email == person.email


async def test_the_link_signs_in_on_the_way_and_is_refused_to_another_account(
    api: Api,
) -> None:
    person = await api.sign_up()
    await _post(person, "/settings/email", new_email="moved@example.org", password=PASSWORD)
    link = await _link_to(api, "moved@example.org")

    signed_out = await api.new_client().get(link)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == f"/login?next={link}"

    other = await api.sign_up()
    theirs = await other.client.get(link)
    assert theirs.status_code == 400 and "for another account" in theirs.text
    assert "Use moved@example.org" not in theirs.text
    refused = await _post(other, link)
    assert refused.status_code == 400
    [email] = await rows(api, select(User.email).where(User.id == other.id))
    assert email == other.email
    assert (await _post(person, link)).status_code == 303  # still the owner's to use


async def test_a_google_only_account_sees_the_sign_in_rule_instead_of_a_password(
    api: Api,
) -> None:
    person = await api.sign_up()
    await execute(
        api,
        update(User).where(User.id == person.id).values(password_hash=None, google_sub="g-2"),
    )
    settings = (await person.client.get("/settings")).text
    form = settings.split('action="/settings/email"', 1)[1].split("</form>", 1)[0]
    assert 'name="password"' not in form
    assert "sign in with Google again, then change your address within 10 minutes" in form
    # Signed in just now: no password needed.
    asked = await _post(person, "/settings/email", new_email="g2@example.org")
    assert asked.status_code == 303, asked.text
