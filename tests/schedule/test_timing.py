"""Next-run computation: cron in a zone across DST changes, intervals, one-offs, bad rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lunogen.schedule.timing import Rule, RuleError, check, next_after, upcoming

NOW = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)


def test_cron_in_a_zone_keeps_local_time_across_the_spring_change() -> None:
    rule = Rule(kind="cron", cron="0 9 * * *", timezone="Europe/Berlin")
    times = upcoming(rule, next_after(rule, NOW), count=3)
    # 09:00 Berlin is 08:00 UTC in winter time, 07:00 UTC from 29 March (summer time).
    assert times == [
        datetime(2026, 3, 29, 7, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 7, 0, tzinfo=UTC),
        datetime(2026, 3, 31, 7, 0, tzinfo=UTC),
    ]
    assert all(t.tzinfo is UTC for t in times)


def test_a_time_in_the_skipped_hour_runs_once_right_after_it() -> None:
    rule = Rule(kind="cron", cron="30 2 * * *", timezone="Europe/Berlin")
    times = upcoming(rule, next_after(rule, NOW), count=2)
    # 02:30 does not exist on 29 March in Berlin: it runs at 03:00 CEST (01:00 UTC).
    assert times == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]


def test_a_time_in_the_repeated_hour_runs_once() -> None:
    rule = Rule(kind="cron", cron="30 2 * * *", timezone="Europe/Berlin")
    start = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    times = upcoming(rule, next_after(rule, start), count=2)
    assert times == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, the first of the two
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
    ]


def test_interval_keeps_its_phase_and_skips_missed_times() -> None:
    start = NOW + timedelta(minutes=10)
    rule = Rule(kind="interval", run_at=start, interval_seconds=3600)
    assert next_after(rule, NOW, first=True) == start
    assert next_after(rule, start) == start + timedelta(hours=1)
    # Down for five and a half hours: the next time is the first one after now, in phase.
    assert next_after(rule, start + timedelta(hours=5, minutes=30)) == start + timedelta(hours=6)


def test_a_one_off_runs_once() -> None:
    rule = Rule(kind="once", run_at=NOW + timedelta(hours=1))
    assert next_after(rule, NOW, first=True) == NOW + timedelta(hours=1)
    assert next_after(rule, NOW + timedelta(hours=1)) is None
    assert upcoming(rule, rule.run_at, count=3) == [NOW + timedelta(hours=1)]


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        (Rule(kind="cron", cron="not a cron"), "cron", "five fields"),
        (Rule(kind="cron", cron="61 * * * *"), "cron", "Bad minute"),
        (Rule(kind="cron", cron="* * * * * *"), "cron", "five fields"),
        (Rule(kind="cron", cron="0 0 30 2 *"), "cron", "Invalid cron"),
        (Rule(kind="cron", cron="0 9 * * *", timezone="Mars/Olympus"), "timezone", "Unknown"),
        (Rule(kind="cron", cron="0 9 * * *", timezone="../../etc/passwd"), "timezone", "IANA"),
        (Rule(kind="once", run_at=NOW - timedelta(seconds=1)), "run_at", "in the past"),
        (Rule(kind="once"), "run_at", "needs run_at"),
        (Rule(kind="once", run_at=NOW + timedelta(days=3000)), "run_at", "five years"),
        (Rule(kind="interval", interval_seconds=59), "interval_seconds", "60 seconds"),
        (Rule(kind="interval"), "interval_seconds", "needs"),
        (Rule(kind="interval", interval_seconds=10**9), "interval_seconds", "366 days"),
    ],
)
def test_bad_rules_name_their_field(rule: Rule, field: str, words: str) -> None:
    with pytest.raises(RuleError) as caught:
        check(rule, now=NOW)
    assert caught.value.field == field
    assert words in caught.value.message


def test_good_rules_pass() -> None:
    check(Rule(kind="cron", cron="*/5 * * * 1-5", timezone="America/New_York"), now=NOW)
    check(Rule(kind="once", run_at=NOW + timedelta(minutes=1)), now=NOW)
    check(Rule(kind="interval", interval_seconds=60), now=NOW)
