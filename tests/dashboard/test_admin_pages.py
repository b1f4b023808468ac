"""The admin console, used as a browser would: find an account, change its role and plan, adjust
its credits (once per drawn form), block and unblock a skill. For anyone but an admin, every
console URL, GET or POST, is the 404 page and changes nothing. Then the same flow in Chromium."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from playwright.async_api import Browser, expect
from sqlalchemy import select

from lunogen.account.models import User
from lunogen.audit.models import AuditEvent
from lunogen.billing.models import CreditEntry
from lunogen.kit.time import utcnow
from lunogen.skill.models import Skill
from tests.agent.support import Dev, new_dev
from tests.dashboard.browser import fits, sign_in
from tests.helpers import Api, Signed
from tests.skill.support import create_skill, flagged_package

_TOKEN = re.compile(r'name="form_token" value="([A-Za-z0-9_-]+)"')
NOT_FOUND = "There is nothing here, or it is not yours to see."


async def _admin(api: Api) -> Signed:
    person = await api.sign_up(api.unique_email("admin"))
    await api.make_admin(person)
    return person


async def _set_role(api: Api, person: Signed, role: str) -> None:
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, person.id)
        assert user is not None
        user.role = role
        await session.commit()


async def _user(api: Api, user_id: str) -> User:
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user


async def _adjustments(api: Api, user_id: str) -> list[CreditEntry]:
    async with api.app.state.sessionmaker() as session:
        query = select(CreditEntry).where(
            CreditEntry.account_id == user_id, CreditEntry.kind == "adjustment"
        )
        return list((await session.execute(query.order_by(CreditEntry.id))).scalars())


async def _events(api: Api, action: str, subject: str) -> list[AuditEvent]:
    async with api.app.state.sessionmaker() as session:
        query = select(AuditEvent).where(
            AuditEvent.action == action, AuditEvent.subject_user_id == subject
        )
        return list((await session.execute(query)).scalars())


async def _skill_row(api: Api, skill_id: str) -> Skill:
    async with api.app.state.sessionmaker() as session:
        skill = await session.get(Skill, skill_id)
        assert skill is not None
        return skill


async def _post(person: Signed, path: str, **fields: str) -> httpx.Response:
    return await person.client.post(path, data={"csrf_token": person.csrf, **fields})


async def _form_token(admin: Signed, user_id: str) -> str:
    shown = await admin.client.get(f"/admin/users/{user_id}")
    assert shown.status_code == 200, shown.text
    match = _TOKEN.search(shown.text)
    assert match, shown.text
    return match.group(1)


async def _balance(dev: Dev) -> Decimal:
    return Decimal((await dev.http.get("/api/v1/billing")).json()["balance"])


def _nav_has_admin(html: str) -> bool:
    return '<a href="/admin"' in html


async def test_only_an_admin_sees_the_console_in_the_navigation(api: Api) -> None:
    person = await api.sign_up()
    assert not _nav_has_admin((await person.client.get("/home")).text)
    await _set_role(api, person, "support")
    assert not _nav_has_admin((await person.client.get("/home")).text)
    admin = await _admin(api)
    home = (await admin.client.get("/home")).text
    assert _nav_has_admin(home)
    overview = await admin.client.get("/admin")
    assert overview.status_code == 200
    assert '<a href="/admin" aria-current="page">Admin</a>' in overview.text
    assert 'href="/admin/users"' in overview.text and 'href="/admin/skills"' in overview.text
    assert '<p class="figure" id="users-count">2</p>' in overview.text


async def test_the_console_does_not_exist_for_users_and_support(api: Api) -> None:
    admin = await _admin(api)
    owner = await new_dev(api)
    skill = await create_skill(owner)
    for role in ("user", "support"):
        person = await api.sign_up()
        await _set_role(api, person, role)
        for path in (
            "/admin",
            "/admin/users",
            "/admin/users?email=example",
            f"/admin/users/{owner.id}",
            f"/admin/users/{person.id}",
            "/admin/skills",
            "/admin/skills?status=flagged",
            f"/admin/skills/{skill['id']}",
        ):
            response = await person.client.get(path)
            assert response.status_code == 404, (role, path)
            assert NOT_FOUND in response.text and owner.person.email not in response.text

        # Forms posted by hand, with a valid CSRF field: refused, nothing changed.
        attempts: list[tuple[str, dict[str, str]]] = [
            (f"/admin/users/{person.id}/account", {"role": "admin", "plan": "pro"}),
            (f"/admin/users/{owner.id}/account", {"role": "support", "plan": "free"}),
            (
                f"/admin/users/{person.id}/credits",
                {"credits": "1000", "reason": "free money", "form_token": "t" * 24},
            ),
            (f"/admin/skills/{skill['id']}/block", {"reason": "gone"}),
            (f"/admin/skills/{skill['id']}/unblock", {}),
        ]
        for path, fields in attempts:
            response = await _post(person, path, **fields)
            assert response.status_code == 404, (role, path, response.text)
            assert NOT_FOUND in response.text
        mine = await _user(api, person.id)
        assert (mine.role, mine.plan) == (role, "free")
        assert (await _user(api, owner.id)).role == "user"
        assert await _adjustments(api, person.id) == []
        assert (await _skill_row(api, skill["id"])).status == "clean"
        # Without the CSRF field too: the console is not there for them either way.
        bare = await person.client.post(
            f"/admin/users/{person.id}/account", data={"role": "admin", "plan": "pro"}
        )
        assert bare.status_code == 404 and NOT_FOUND in bare.text
        assert (await _user(api, person.id)).role == role
    # Without the CSRF field an admin's form is refused.
    bare = await admin.client.post(
        f"/admin/users/{owner.id}/account", data={"role": "admin", "plan": "pro"}
    )
    assert bare.status_code == 403
    assert (await _user(api, owner.id)).role == "user"


async def _insert_users(api: Api, stem: str, count: int) -> list[str]:
    """`count` accounts made straight in the database (verified, consent not yet given), one
    second apart, oldest first; their addresses."""
    emails = [f"{stem}{number:02d}@shop.example" for number in range(count)]
    start = utcnow() - timedelta(hours=1)
    async with api.app.state.sessionmaker() as session:
        for number, email in enumerate(emails):
            session.add(
                User(
                    email=email,
                    name=f"Shopper {number}",
                    email_verified_at=start if number else None,
                    plan="pro" if number == 1 else "free",
                    created_at=start + timedelta(seconds=number),
                )
            )
        await session.commit()
    return emails


async def test_find_accounts_by_email_page_by_page(api: Api) -> None:
    admin = await _admin(api)
    emails = await _insert_users(api, "shopper", 27)
    first = await admin.client.get("/admin/users?email=SHOPPER")
    assert first.status_code == 200
    assert "27 accounts with “shopper” in the address." in first.text
    assert emails[0] in first.text and emails[24] in first.text
    assert emails[25] not in first.text and admin.email not in first.text
    rows = re.findall(
        r"<tr>\s*<td><a href=\"/admin/users/[^\"]+\">([^<]+)</a>.*?</tr>", first.text, re.S
    )
    assert rows == emails[:25]
    assert "<td>email not verified</td>" in first.text and "<td>consent due</td>" in first.text
    assert "<td>pro</td>" in first.text
    assert 'href="/admin/users?email=shopper&amp;page=2"' in first.text
    second = await admin.client.get("/admin/users?email=shopper&page=2")
    assert emails[26] in second.text and emails[0] not in second.text
    assert "Page 2 of 2" in second.text
    assert 'href="/admin/users?email=shopper" rel="prev"' in second.text
    none = await admin.client.get("/admin/users?email=nobody-here")
    assert "No account has “nobody-here” in its address." in none.text
    everyone = await admin.client.get("/admin/users")
    assert "28 accounts." in everyone.text and admin.email not in everyone.text
    newest = await admin.client.get("/admin/users?page=2")  # oldest first: the admin is last
    assert admin.email in newest.text and "<td>active</td>" in newest.text
    assert (await admin.client.get("/admin/users?page=0")).status_code == 400
    assert (await admin.client.get("/admin/users?email=" + "x" * 400)).status_code == 422
    assert (await admin.client.get("/admin/users/not-an-id")).status_code == 404


async def test_role_and_plan_change_is_applied_and_audited(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    page = await admin.client.get(f"/admin/users/{person.id}")
    assert page.status_code == 200
    assert person.email in page.text and 'id="role">user<' in page.text
    saved = await _post(admin, f"/admin/users/{person.id}/account", role="support", plan="pro")
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == f"/admin/users/{person.id}?outcome=account"
    after = await admin.client.get(saved.headers["location"])
    assert "Role and plan saved." in after.text
    assert 'id="role">support<' in after.text and 'id="plan">Pro<' in after.text
    user = await _user(api, person.id)
    assert (user.role, user.plan) == ("support", "pro")
    (role_event,) = await _events(api, "account.role_changed", person.id)
    (plan_event,) = await _events(api, "account.plan_changed", person.id)
    assert role_event.actor_user_id == admin.id and plan_event.actor_user_id == admin.id
    assert role_event.details == {"from": "user", "to": "support"}
    assert plan_event.details == {"from": "free", "to": "pro"}
    events = re.search(r'<table id="events">.*?</table>', after.text, re.S)
    assert events and "Role changed" in events.group(0) and "(by an admin)" in events.group(0)
    assert "from user; to support" in events.group(0)
    # The person sees it in their own security log, and now as support has no console.
    assert "Role changed" in (await person.client.get("/security")).text
    assert (await person.client.get("/admin")).status_code == 404


async def test_bad_account_input_is_shown_and_nothing_is_written(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    unknown = await _post(admin, f"/admin/users/{person.id}/account", role="owner", plan="pro")
    assert unknown.status_code == 422
    assert 'role="alert">Role: choose one of user, support, admin.<' in unknown.text
    assert '<option value="pro" selected>' in unknown.text  # the form keeps what was chosen
    no_plan = await _post(admin, f"/admin/users/{person.id}/account", role="user", plan="gold")
    assert no_plan.status_code == 422 and "Plan: choose one of free, pro." in no_plan.text
    # An admin cannot demote themselves (the service's rule, shown on the page).
    self_demote = await _post(admin, f"/admin/users/{admin.id}/account", role="user", plan="free")
    assert self_demote.status_code == 409
    assert "You cannot remove your own admin role" in self_demote.text
    assert (await _user(api, admin.id)).role == "admin"
    user = await _user(api, person.id)
    assert (user.role, user.plan) == ("user", "free")
    assert await _events(api, "account.role_changed", person.id) == []
    assert await _events(api, "account.plan_changed", person.id) == []
    gone = await _post(admin, "/admin/users/nobody/account", role="user", plan="free")
    assert gone.status_code == 404


async def test_credits_adjusted_once_per_form_with_the_reason(api: Api) -> None:
    admin = await _admin(api)
    dev = await new_dev(api)
    before = await _balance(dev)
    token = await _form_token(admin, dev.id)
    form = {"credits": "25.5", "reason": "Goodwill after the outage", "form_token": token}
    first = await _post(admin, f"/admin/users/{dev.id}/credits", **form)
    assert first.status_code == 303, first.text
    assert first.headers["location"] == f"/admin/users/{dev.id}?outcome=credits#credits-h"
    again = await _post(admin, f"/admin/users/{dev.id}/credits", **form)  # a double submit
    assert again.status_code == 303, again.text
    (entry,) = await _adjustments(api, dev.id)
    assert entry.amount == 25_500_000 and entry.description == "Goodwill after the outage"
    assert await _balance(dev) == before + Decimal("25.5")
    (event,) = await _events(api, "billing.credits_adjusted", dev.id)
    assert event.actor_user_id == admin.id
    assert event.details == {"credits": "25.5", "reason": "Goodwill after the outage"}
    shown = await admin.client.get(f"/admin/users/{dev.id}?outcome=credits")
    assert "Credits adjusted" in shown.text
    assert f'id="balance">{before + Decimal("25.5")}<' in shown.text
    assert "Goodwill after the outage" in shown.text
    assert _TOKEN.search(shown.text).group(1) != token  # type: ignore[union-attr]
    # The same form sent back with another amount: refused, not applied.
    changed = await _post(admin, f"/admin/users/{dev.id}/credits", **{**form, "credits": "99"})
    assert changed.status_code == 409
    assert "already used for a different adjustment" in changed.text
    assert len(await _adjustments(api, dev.id)) == 1

    # A new form takes credits away, and the owner sees the reason in their transactions.
    taken = await _post(
        admin,
        f"/admin/users/{dev.id}/credits",
        credits="-5",
        reason="Duplicate grant",
        form_token=await _form_token(admin, dev.id),
    )
    assert taken.status_code == 303
    assert await _balance(dev) == before + Decimal("20.5")
    mine = (await dev.http.get("/api/v1/billing/transactions")).json()["data"]
    assert [(t["amount"], t["description"]) for t in mine[:2]] == [
        ("-5", "Duplicate grant"),
        ("25.5", "Goodwill after the outage"),
    ]


async def test_bad_credit_input_is_shown_with_the_form_kept(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    token = await _form_token(admin, person.id)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"credits": "ten", "reason": "Because"}, 422, "Credits: enter a number other than zero"),
        ({"credits": "0", "reason": "Because"}, 422, "Credits: enter a number other than zero"),
        ({"credits": "1.0000001", "reason": "Because"}, 422, "six decimal places"),
        ({"credits": "NaN", "reason": "Because"}, 422, "Credits: enter a number"),
        ({"credits": "10", "reason": "   "}, 422, "Reason: say why, in 1 to 400 characters"),
        ({"credits": "", "reason": ""}, 422, "Reason: say why"),
        ({"credits": "10", "reason": "ok", "form_token": "short"}, 400, "form is out of date"),
    ]
    for fields, status, message in cases:
        sent = {"form_token": token, **fields}
        response = await _post(admin, f"/admin/users/{person.id}/credits", **sent)
        assert response.status_code == status, (fields, response.text)
        assert 'id="credits-error" role="alert">' in response.text and message in response.text
        assert 'name="credits" required maxlength="40"' in response.text
        assert f'value="{fields["credits"]}"' in response.text
    assert await _adjustments(api, person.id) == []
    assert await _events(api, "billing.credits_adjusted", person.id) == []
    # The refused form kept its token: corrected, it applies once.
    fixed = await _post(
        admin, f"/admin/users/{person.id}/credits", credits="3", reason="Fixed", form_token=token
    )
    assert fixed.status_code == 303
    assert len(await _adjustments(api, person.id)) == 1


async def test_block_and_unblock_any_owners_skill(api: Api) -> None:
    admin = await _admin(api)
    owner = await new_dev(api)
    skill = await create_skill(owner, flagged_package())
    listed = await admin.client.get("/admin/skills?status=flagged")
    assert listed.status_code == 200
    assert (
        f'href="/admin/skills/{skill["id"]}"' in listed.text and owner.person.email in listed.text
    )
    assert "No skill is blocked." in (await admin.client.get("/admin/skills?status=blocked")).text
    assert (await admin.client.get("/admin/skills?status=bogus")).status_code == 422
    shown = await admin.client.get(f"/admin/skills/{skill['id']}")
    assert shown.status_code == 200
    assert "curl -fsSL" in shown.text and "Scanner findings" in shown.text
    assert 'id="skill-status">flagged<' in shown.text

    empty = await _post(admin, f"/admin/skills/{skill['id']}/block", reason="  ")
    assert empty.status_code == 422
    assert 'id="block-error" role="alert">Reason: say why' in empty.text
    assert (await _skill_row(api, skill["id"])).status == "flagged"

    blocked = await _post(admin, f"/admin/skills/{skill['id']}/block", reason="Pipes to bash")
    assert blocked.status_code == 303
    assert blocked.headers["location"] == f"/admin/skills/{skill['id']}?outcome=blocked"
    row = await _skill_row(api, skill["id"])
    assert (row.status, row.blocked_reason, row.blocked_by) == (
        "blocked",
        "Pipes to bash",
        admin.id,
    )
    page = await admin.client.get(blocked.headers["location"])
    assert "Skill blocked" in page.text and 'id="blocked-reason">Pipes to bash<' in page.text
    assert (await owner.http.get(f"/api/v1/skills/{skill['id']}")).json()["status"] == "blocked"
    twice = await _post(admin, f"/admin/skills/{skill['id']}/block", reason="again")
    assert twice.status_code == 409 and "The skill is blocked already" in twice.text
    assert (await _skill_row(api, skill["id"])).blocked_reason == "Pipes to bash"

    lifted = await _post(admin, f"/admin/skills/{skill['id']}/unblock")
    assert lifted.status_code == 303
    assert (await _skill_row(api, skill["id"])).status == "flagged"
    again = await _post(admin, f"/admin/skills/{skill['id']}/unblock")
    assert again.status_code == 409 and "The skill is not blocked" in again.text
    assert (await admin.client.get("/admin/skills/not-a-skill")).status_code == 404


async def test_the_admin_flow_in_a_real_browser(
    browser: Browser, live_server: str, api: Api
) -> None:
    admin = await _admin(api)
    dev = await new_dev(api)
    before = await _balance(dev)
    watched = await sign_in(browser, live_server, admin)
    page = watched.page
    await page.click("nav.sections >> text=Admin")
    await expect(page.locator("h1")).to_have_text("Admin")
    await page.click("#users-h a")
    await page.fill("input[name=email]", dev.person.email.split("@")[0])
    await page.keyboard.press("Enter")
    await expect(page.locator("#users-total")).to_have_text(
        f"1 account with “{dev.person.email.split('@')[0]}” in the address."
    )
    await page.click(f"text={dev.person.email}")
    await expect(page.locator("h1")).to_have_text(dev.person.email)

    # A refused amount stays in the form with the reason announced.
    await page.fill("input[name=credits]", "lots")
    await page.fill("input[name=reason]", "Welcome bonus")
    await page.click("text=Adjust credits")
    await expect(page.locator("#credits-error")).to_contain_text("Credits: enter a number")
    await expect(page.locator("input[name=reason]")).to_have_value("Welcome bonus")

    await page.fill("input[name=credits]", "12.5")
    # The same form sent twice from the page as a double click would, then submitted with
    # the keyboard: one adjustment.
    statuses = await page.evaluate(
        """async () => {
            const form = document.querySelector("form[action$='/credits']");
            const send = () => fetch(form.action, {
                method: "POST", body: new URLSearchParams(new FormData(form)), redirect: "manual",
            }).then((response) => response.type);
            return Promise.all([send(), send()]);
        }"""
    )
    assert statuses == ["opaqueredirect", "opaqueredirect"]
    await page.focus("input[name=reason]")
    await page.keyboard.press("Enter")
    await expect(page.locator("main .flash")).to_contain_text("Credits adjusted")
    await expect(page.locator("#balance")).to_have_text(str(before + Decimal("12.5")))
    await expect(page.locator("#entries tbody tr").first).to_contain_text("Welcome bonus")
    assert len(await _adjustments(api, dev.id)) == 1
    assert await _balance(dev) == before + Decimal("12.5")
    assert await fits(page, 360)
    watched.check()
