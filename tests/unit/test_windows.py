"""Board window keys: local day and ISO week (Monday first) in the program's time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from gamify.program import Window
from gamify.windows import ALL_TIME, award_keys, current_key, day_key, local_day, week_key

SAO_PAULO = ZoneInfo("America/Sao_Paulo")  # UTC-3, no daylight saving since 2019
TOKYO = ZoneInfo("Asia/Tokyo")  # UTC+9


def test_day_key() -> None:
    assert day_key(date(2027, 1, 5)) == "d:2027-01-05"


@pytest.mark.parametrize(
    ("day", "key"),
    [
        (date(2027, 1, 4), "w:2027-W01"),  # Monday: first day of ISO week 1 of 2027
        (date(2027, 1, 10), "w:2027-W01"),  # Sunday: still week 1
        (date(2027, 1, 11), "w:2027-W02"),  # Monday: a new week
        (date(2027, 1, 1), "w:2026-W53"),  # Friday: belongs to the last ISO week of 2026
        (date(2027, 1, 3), "w:2026-W53"),
        (date(2026, 12, 28), "w:2026-W53"),
        (date(2025, 12, 29), "w:2026-W01"),  # Monday in December that starts 2026's week 1
        (date(2027, 12, 31), "w:2027-W52"),
    ],
)
def test_week_key_is_iso_week_monday_first(day: date, key: str) -> None:
    assert week_key(day) == key


def test_local_day_uses_the_zone() -> None:
    instant = datetime(2027, 1, 5, 1, 30, tzinfo=UTC)
    assert local_day(instant, SAO_PAULO) == date(2027, 1, 4)  # 22:30 the evening before
    assert local_day(instant, ZoneInfo("UTC")) == date(2027, 1, 5)
    assert local_day(datetime(2027, 1, 4, 15, 0, tzinfo=UTC), TOKYO) == date(2027, 1, 5)  # 00:00 JST


def test_award_keys() -> None:
    # Monday 2027-01-04 01:30 UTC is Sunday 2027-01-03 22:30 in São Paulo: previous ISO week.
    instant = datetime(2027, 1, 4, 1, 30, tzinfo=UTC)
    assert award_keys(instant, SAO_PAULO) == ["d:2027-01-03", "w:2026-W53"]
    assert award_keys(instant, ZoneInfo("UTC")) == ["d:2027-01-04", "w:2027-W01"]


@pytest.mark.parametrize(
    ("window", "zone", "key"),
    [
        (Window.all_time, SAO_PAULO, "all"),
        (Window.daily, SAO_PAULO, "d:2027-01-10"),
        (Window.weekly, SAO_PAULO, "w:2027-W01"),
        (Window.daily, ZoneInfo("UTC"), "d:2027-01-11"),
        (Window.weekly, ZoneInfo("UTC"), "w:2027-W02"),
    ],
)
def test_current_key(window: Window, zone: ZoneInfo, key: str) -> None:
    now = datetime(2027, 1, 11, 2, 0, tzinfo=UTC)  # Sunday 23:00 in São Paulo, Monday in UTC
    assert current_key(window, now, zone) == key


def test_current_key_matches_award_keys() -> None:
    now = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)
    keys = award_keys(now, TOKYO)
    assert [current_key(w, now, TOKYO) for w in (Window.daily, Window.weekly)] == keys
    # The all-time board has no rows of its own: snapshots rank users.points for it.
    assert current_key(Window.all_time, now, TOKYO) == ALL_TIME not in keys
