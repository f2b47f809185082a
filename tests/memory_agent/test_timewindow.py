"""Time phrases → windows, with a fixed "now" (never the clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_agent.query.timewindow import WindowMatch, parse_window, scan_window
from memory_agent.types import TimeWindow
from tests.conftest import NOW_DT as NOW  # Saturday 2026-11-21 10:00 UTC

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def ts(text: str | None, tz: ZoneInfo = UTC_ZONE) -> float | None:
    """'2026-11-14 10:00' in ``tz`` → epoch seconds."""
    if text is None:
        return None
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=tz).timestamp()


CASES: list[tuple[str, str, str | None, str | None]] = [
    # question, expected phrase, since, until (UTC wall times; None = unbounded)
    ("What rollbacks happened in the last 7 days?", "in the last 7 days", "2026-11-14 10:00", None),
    ("errors in the past 24 hours", "in the past 24 hours", "2026-11-20 10:00", None),
    ("anything in the last 30 minutes", "in the last 30 minutes", "2026-11-21 09:30", None),
    ("deploys last 2 weeks", "last 2 weeks", "2026-11-07 10:00", None),
    ("what broke last month", "last month", "2026-10-01 00:00", "2026-11-01 00:00"),
    ("what broke in the past month", "in the past month", "2026-10-21 10:00", None),
    ("what broke in the last month", "in the last month", "2026-10-21 10:00", None),
    ("what happened today", "today", "2026-11-21 00:00", "2026-11-22 00:00"),
    ("What happened YESTERDAY?", "YESTERDAY", "2026-11-20 00:00", "2026-11-21 00:00"),
    ("rollbacks this week", "this week", "2026-11-16 00:00", "2026-11-23 00:00"),
    ("rollbacks last week", "last week", "2026-11-09 00:00", "2026-11-16 00:00"),
    ("rollbacks this month", "this month", "2026-11-01 00:00", "2026-12-01 00:00"),
    ("Why did production roll back on Friday?", "on Friday", "2026-11-20 00:00", "2026-11-21 00:00"),
    ("friday's deploys", "friday", "2026-11-20 00:00", "2026-11-21 00:00"),
    ("deploys Friday", "Friday", "2026-11-20 00:00", "2026-11-21 00:00"),
    ("deploys last Friday", "last Friday", "2026-11-20 00:00", "2026-11-21 00:00"),
    ("deploys on Saturday", "on Saturday", "2026-11-14 00:00", "2026-11-15 00:00"),  # today is Saturday
    ("deploys on Monday", "on Monday", "2026-11-16 00:00", "2026-11-17 00:00"),
    ("errors since Monday", "since Monday", "2026-11-16 00:00", None),
    ("errors since yesterday", "since yesterday", "2026-11-20 00:00", None),
    ("errors since 2026-11-03", "since 2026-11-03", "2026-11-03 00:00", None),
    ("errors in November", "in November", "2026-11-01 00:00", "2026-12-01 00:00"),
    ("errors in December", "in December", "2025-12-01 00:00", "2026-01-01 00:00"),  # not in the future
    ("errors in November 2025", "in November 2025", "2025-11-01 00:00", "2025-12-01 00:00"),
    ("errors last November", "last November", "2025-11-01 00:00", "2025-12-01 00:00"),
    ("errors on 2026-11-03", "on 2026-11-03", "2026-11-03 00:00", "2026-11-04 00:00"),
    ("errors on Nov 3", "on Nov 3", "2026-11-03 00:00", "2026-11-04 00:00"),
    ("errors on Nov 30", "on Nov 30", "2025-11-30 00:00", "2025-12-01 00:00"),  # not in the future
    ("errors on 3 November 2026", "on 3 November 2026", "2026-11-03 00:00", "2026-11-04 00:00"),
    ("errors on the 3rd of November", "on the 3rd of November", "2026-11-03 00:00", "2026-11-04 00:00"),
    ("errors on November 3rd, 2025", "on November 3rd, 2025", "2025-11-03 00:00", "2025-11-04 00:00"),
    (
        "errors between 2026-11-01 and 2026-11-03",
        "between 2026-11-01 and 2026-11-03",
        "2026-11-01 00:00",
        "2026-11-04 00:00",
    ),
    (
        "errors between Monday and Wednesday",
        "between Monday and Wednesday",
        "2026-11-16 00:00",
        "2026-11-19 00:00",
    ),
    ("errors from Monday to Wednesday", "from Monday to Wednesday", "2026-11-16 00:00", "2026-11-19 00:00"),
    ("errors before 2026-11-03", "before 2026-11-03", None, "2026-11-03 00:00"),
    ("errors after 2026-11-03", "after 2026-11-03", "2026-11-04 00:00", None),
    ("errors until yesterday", "until yesterday", None, "2026-11-21 00:00"),
    ("what happened this morning", "this morning", "2026-11-21 00:00", "2026-11-21 12:00"),
    ("what happened last night", "last night", "2026-11-20 18:00", "2026-11-21 06:00"),
    ("any alerts in the last hour", "in the last hour", "2026-11-21 09:00", None),
    ("flaky tests over the past 3 days", "over the past 3 days", "2026-11-18 10:00", None),
    ("anomalies during the last 48 hours", "during the last 48 hours", "2026-11-19 10:00", None),
    ("rollbacks last three days", "last three days", "2026-11-18 10:00", None),
    ("rollbacks in the PAST Twenty-Four hours", "in the PAST Twenty-Four hours", "2026-11-20 10:00", None),
    ("rollbacks over the past couple of days", "over the past couple of days", "2026-11-19 10:00", None),
    ("rollbacks 3 days ago", "3 days ago", "2026-11-18 00:00", "2026-11-19 00:00"),
    (
        "rollbacks the day before yesterday",
        "the day before yesterday",
        "2026-11-19 00:00",
        "2026-11-20 00:00",
    ),
    ("rollbacks last year", "last year", "2025-01-01 00:00", "2026-01-01 00:00"),
    ("rollbacks in 2025", "in 2025", "2025-01-01 00:00", "2026-01-01 00:00"),
    ("rollbacks this weekend", "this weekend", "2026-11-21 00:00", "2026-11-23 00:00"),
    ("rollbacks since May", "since May", "2026-05-01 00:00", None),
    ("rollbacks on 2026-11-03 and yesterday", "on 2026-11-03", "2026-11-03 00:00", "2026-11-04 00:00"),
]


@pytest.mark.parametrize(("question", "phrase", "since", "until"), CASES)
def test_phrase_table(question: str, phrase: str, since: str | None, until: str | None) -> None:
    m = parse_window(question, now=NOW, tz=UTC_ZONE)
    assert m is not None, question
    assert m.phrase == phrase
    assert question[m.start : m.end] == phrase
    assert m.window == TimeWindow(since=ts(since), until=ts(until))


@pytest.mark.parametrize(
    "question",
    [
        "What rollbacks happened?",
        "you may go now",  # "may" without a preposition is not a month
        "the last deploy failed",
        "march the tests forward",
        "trace t-81",
        "",
        "last",
        "on",
        "between",
        "mondays are hard",
    ],
)
def test_no_time_phrase(question: str) -> None:
    assert parse_window(question, now=NOW, tz=UTC_ZONE) is None


@pytest.mark.parametrize("question", ["what happened on 2026-02-30?", "errors since 2026-13-01", "on Feb 30"])
def test_impossible_dates_give_no_window_and_are_reported(question: str) -> None:
    scan = scan_window(question, now=NOW, tz=UTC_ZONE)
    assert scan.match is None
    assert len(scan.rejected) == 1
    assert scan.rejected[0] in question


def test_impossible_date_does_not_hide_a_real_phrase() -> None:
    scan = scan_window("on 2026-02-30 or yesterday", now=NOW, tz=UTC_ZONE)
    assert scan.match is not None and scan.match.phrase == "yesterday"
    assert scan.rejected == ("on 2026-02-30",)


def test_friday_asked_on_a_friday_means_a_week_ago() -> None:
    friday = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    m = parse_window("on Friday", now=friday, tz=UTC_ZONE)
    assert m is not None
    assert m.window == TimeWindow(ts("2026-11-13 00:00"), ts("2026-11-14 00:00"))
    this = parse_window("this Friday", now=friday, tz=UTC_ZONE)
    assert this is not None and this.window == TimeWindow(ts("2026-11-20 00:00"), ts("2026-11-21 00:00"))


# Berlin is UTC+1 in November: 23:30 UTC Saturday is already 00:30 Sunday there.
LATE = datetime(2026, 11, 21, 23, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("question", "since", "until"),
    [
        ("today", "2026-11-22 00:00", "2026-11-23 00:00"),
        ("yesterday", "2026-11-21 00:00", "2026-11-22 00:00"),
        ("this week", "2026-11-16 00:00", "2026-11-23 00:00"),  # Sunday: still the week of Monday 16th
        ("on Friday", "2026-11-20 00:00", "2026-11-21 00:00"),
        ("this month", "2026-11-01 00:00", "2026-12-01 00:00"),
        ("on 2026-11-03", "2026-11-03 00:00", "2026-11-04 00:00"),
    ],
)
def test_day_boundaries_follow_the_configured_zone(question: str, since: str, until: str) -> None:
    m = parse_window(question, now=LATE, tz=BERLIN)
    assert m is not None
    assert m.window == TimeWindow(ts(since, BERLIN), ts(until, BERLIN))
    utc = parse_window(question, now=LATE, tz=UTC_ZONE)
    assert utc is not None and utc.window != m.window  # same instant, other zone, other days


def test_berlin_today_in_utc_seconds() -> None:
    m = parse_window("today", now=LATE, tz=BERLIN)
    assert m is not None
    # Sunday 22nd 00:00 CET == Saturday 21st 23:00 UTC
    assert m.window == TimeWindow(ts("2026-11-21 23:00"), ts("2026-11-22 23:00"))


def test_days_across_a_dst_change_are_local_days() -> None:
    # Berlin leaves summer time on Sunday 2026-10-25: that day has 25 hours.
    monday = datetime(2026, 10, 26, 12, 0, tzinfo=BERLIN)
    m = parse_window("yesterday", now=monday, tz=BERLIN)
    assert m is not None and m.window.since is not None and m.window.until is not None
    assert m.window.until - m.window.since == 25 * 3600
    hours = parse_window("past 24 hours", now=monday, tz=BERLIN)
    assert hours is not None and hours.window.since == monday.timestamp() - 24 * 3600


def test_naive_now_is_read_in_the_zone() -> None:
    m = parse_window("today", now=datetime(2026, 11, 22, 0, 30), tz=BERLIN)
    assert m is not None and m.window.since == ts("2026-11-22 00:00", BERLIN)


def test_leftmost_phrase_wins_and_match_is_frozen() -> None:
    m = parse_window("yesterday, not last week", now=NOW, tz=UTC_ZONE)
    assert m is not None and m.phrase == "yesterday" and m.start == 0
    assert isinstance(m, WindowMatch)
    with pytest.raises(AttributeError):
        m.phrase = "x"  # type: ignore[misc]


FTS_NOISE = st.sampled_from(
    ['"AND OR NEAR( * ^"', "NEAR(", "*", "^", '"', "between", " and ", "last ", "on ", "2026-02-30", "since ",
     "friday", "nov 31", "in ", "9999-99-99", "0000-01-01", "last 999999 years", "9999-12-31", "after ",
     "\u0130", "\u017f", "\x00", "ago", " days ", "twenty-"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(FTS_NOISE, st.text(max_size=20)), max_size=30))
def test_parse_window_never_raises(parts: list[str]) -> None:
    question = "".join(parts)
    for tz in (UTC_ZONE, BERLIN):
        m = parse_window(question, now=NOW, tz=tz)
        if m is not None:
            assert question[m.start : m.end] == m.phrase


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.text(min_size=1, max_size=40))
def test_parse_window_on_100kb_strings(chunk: str) -> None:
    question = (chunk * (100_000 // len(chunk) + 1))[:100_000]
    parse_window(question, now=NOW, tz=UTC_ZONE)


@pytest.mark.parametrize(
    "chunk",
    ["last ", " ", "on 2026-02-30 ", "between monday and ", "9" * 7, "last twenty ", "the day before "],
)
def test_adversarial_100kb_strings(chunk: str) -> None:
    question = chunk * (100_000 // len(chunk))
    scan = scan_window(question, now=NOW, tz=UTC_ZONE)
    assert len(scan.rejected) <= 16
    if scan.match is not None:
        assert question[scan.match.start : scan.match.end] == scan.match.phrase


def test_extreme_dates_do_not_raise() -> None:
    for question in ("before 0001-01-01", "after 9999-12-31", "in 9999", "in 0000", "last 999999 years"):
        scan_window(question, now=NOW, tz=UTC_ZONE)
