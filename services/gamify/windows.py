"""Board windows: which day and ISO week an instant falls in, in the program's time zone.

`board_points.window_key` is `d:2027-01-05` (daily) or `w:2027-W01` (ISO week, Monday first).
The scorer adds each award to the keys of its `occurredAt`; snapshots read the key of the
current window. The all-time window (`all`) has no rows of its own: it is `users.points`, every
point earned, which the scorer keeps anyway (a third fewer board rows to write per award).
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from gamify.program import Window

ALL_TIME = "all"


def local_day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def day_key(day: date) -> str:
    return f"d:{day.isoformat()}"


def week_key(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"w:{year}-W{week:02d}"


def award_keys(instant: datetime, zone: ZoneInfo) -> list[str]:
    """The `board_points` windows an award at `instant` counts in (all-time: see above)."""
    day = local_day(instant, zone)
    return [day_key(day), week_key(day)]


def current_key(window: Window, now: datetime, zone: ZoneInfo) -> str:
    """The key of the window that contains `now`."""
    if window == Window.all_time:
        return ALL_TIME
    day = local_day(now, zone)
    return day_key(day) if window == Window.daily else week_key(day)
