"""The snapshot documents (DESIGN.md, "Snapshot JSON"), as pure functions of what was read.

No I/O here: the writer reads the program's schema, these functions rank and render, and the
writer uploads. Field names are the contract apps rely on:

- `leaderboards/<id>.json`: `{"board", "window", "generatedAt", "participants",
  "entries": [{"rank", "user", "points"}]}` (at most the board's `size` entries);
- `users/<user>.json`: `{"user", "points", "balance", "ranks": {"<board>": rank or null},
  "badges": [ids], "redemptions": [{"id", "reward", "status", "reason"?}], "updatedAt"}`;
- `catalog.json`: `{"rewards": [{"id", "name", "cost", "remaining"}]}` (`remaining` null when
  the stock is unlimited);
- `manifest.json`: version, generatedAt, program, schedule, lastScoredPosition, the files
  written by this run, counts, and the window key each board shows.

Ranking is standard competition ranking (1, 2, 2, 4); equal points are listed by user id
(code point order, the same on every database collation); only users with points > 0 in the
window take part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gamify.program import Leaderboard, Mode, Program, ProgramSpec, Reward, Schedule
from gamify.windows import current_key

MANIFEST_KEY = "manifest.json"
CATALOG_KEY = "catalog.json"


def leaderboard_key(board_id: str) -> str:
    return f"leaderboards/{board_id}.json"


def user_key(user: str) -> str:
    return f"users/{user}.json"


def rfc3339(instant: datetime) -> str:
    """UTC with millisecond precision and a `Z`, e.g. `2027-01-05T08:30:00.000Z`."""
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(document: Mapping[str, Any]) -> bytes:
    """Compact JSON; key order is the order the documents are built in (stable)."""
    return orjson.dumps(document)


# --- windows ---------------------------------------------------------------------------------


def reference_time(now: datetime, schedule: Schedule) -> datetime:
    """The instant whose day/week the boards show: now, or the program's last instant once ended.

    The end instant itself belongs to the next day when the program ends at midnight, so an
    ended program shows the window just before its end (its real last day and week).
    """
    last_instant = schedule.end - timedelta(microseconds=1)
    return min(now, last_instant)


def board_windows(spec: ProgramSpec, now: datetime) -> dict[str, str]:
    """The window key each board shows at `now` (board id -> key; see gamify.windows)."""
    reference = reference_time(now, spec.schedule)
    zone = spec.schedule.zone
    return {board.id: current_key(board.window, reference, zone) for board in boards_of(spec)}


def boards_of(spec: ProgramSpec) -> list[Leaderboard]:
    return [] if spec.mode == Mode.rewards else list(spec.leaderboards)


def has_catalog(spec: ProgramSpec) -> bool:
    return spec.mode != Mode.ranking


# --- ranking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    rank: int
    user: str
    points: int


@dataclass(frozen=True)
class Ranking:
    """Every participant of one board window, in board order."""

    entries: tuple[Entry, ...]
    rank_of: Mapping[str, int] = field(repr=False)

    @property
    def participants(self) -> int:
        return len(self.entries)

    def top(self, size: int) -> tuple[Entry, ...]:
        return self.entries[:size]

    def ranked_within(self, size: int) -> list[str]:
        """Users whose rank is <= size (ties at the cut may exceed `size` users)."""
        return [entry.user for entry in self.entries if entry.rank <= size]


def rank(points: Iterable[tuple[str, int]]) -> Ranking:
    """Standard competition ranking of (user, points); users without points > 0 are left out."""
    ordered = sorted(((user, pts) for user, pts in points if pts > 0), key=lambda item: (-item[1], item[0]))
    entries: list[Entry] = []
    for position, (user, pts) in enumerate(ordered, start=1):
        same_as_previous = entries and entries[-1].points == pts
        entries.append(Entry(rank=entries[-1].rank if same_as_previous else position, user=user, points=pts))
    return Ranking(entries=tuple(entries), rank_of={entry.user: entry.rank for entry in entries})


def user_ranks(user: str, rankings: Mapping[str, Ranking]) -> dict[str, int | None]:
    """The user's rank on every board (None when not taking part in the board's window)."""
    return {board_id: ranking.rank_of.get(user) for board_id, ranking in rankings.items()}


def published_form(ranks: Mapping[str, int | None]) -> dict[str, int]:
    """What `users.published_ranks` stores: only the boards where the user has a rank."""
    return {board_id: value for board_id, value in ranks.items() if value is not None}


def rank_changed_users(
    rankings: Mapping[str, Ranking],
    sizes: Mapping[str, int],
    published: Mapping[str, Mapping[str, int]],
) -> set[str]:
    """Users whose published rank on some board is wrong *and* who are (or were) at the top.

    A rank shown within a board's `size` must be right: a user ranked within the size now, or
    published within it before (who may have dropped out), is rewritten when the two differ.
    Ranks further down are refreshed only when the user's own data changes, so snapshot writes
    grow with changed users, not with all users. `published` holds the users' published ranks
    (`users.published_ranks`), for at least every user the writer looked up.
    """
    changed: set[str] = set()
    for board_id, ranking in rankings.items():
        size = sizes[board_id]
        for user in ranking.ranked_within(size):
            if published.get(user, {}).get(board_id) != ranking.rank_of[user]:
                changed.add(user)
        for user, ranks in published.items():
            before = ranks.get(board_id)
            if before is not None and before <= size and ranking.rank_of.get(user) != before:
                changed.add(user)
    return changed


# --- documents -------------------------------------------------------------------------------


def leaderboard_document(board: Leaderboard, ranking: Ranking, generated_at: datetime) -> dict[str, Any]:
    return {
        "board": board.id,
        "window": board.window.value,
        "generatedAt": rfc3339(generated_at),
        "participants": ranking.participants,
        "entries": [{"rank": e.rank, "user": e.user, "points": e.points} for e in ranking.top(board.size)],
    }


@dataclass(frozen=True)
class UserTotals:
    user: str
    points: int
    spent: int


@dataclass(frozen=True)
class BadgeAward:
    badge: str
    awarded_at: datetime


@dataclass(frozen=True)
class Redemption:
    id: str  # the reward.redeem event id
    reward: str
    status: str  # fulfilled | rejected
    reason: str | None
    occurred_at: datetime


def user_document(
    totals: UserTotals,
    ranks: Mapping[str, int | None],
    badges: Sequence[BadgeAward],
    redemptions: Sequence[Redemption],
    updated_at: datetime,
) -> dict[str, Any]:
    """`updatedAt` is when this document was computed (the snapshot that wrote it)."""
    items: list[dict[str, Any]] = []
    for redemption in sorted(redemptions, key=lambda r: (r.occurred_at, r.id)):
        item: dict[str, Any] = {"id": redemption.id, "reward": redemption.reward, "status": redemption.status}
        if redemption.reason is not None:
            item["reason"] = redemption.reason
        items.append(item)
    return {
        "user": totals.user,
        "points": totals.points,
        "balance": totals.points - totals.spent,
        "ranks": dict(ranks),
        "badges": [award.badge for award in sorted(badges, key=lambda b: (b.awarded_at, b.badge))],
        "redemptions": items,
        "updatedAt": rfc3339(updated_at),
    }


@dataclass(frozen=True)
class Stock:
    stock: int | None  # None: unlimited
    redeemed: int


def catalog_document(rewards: Sequence[Reward], stock: Mapping[str, Stock]) -> dict[str, Any]:
    """Rewards in the program's order; the scorer's `reward_stock` row wins over the spec."""
    entries = []
    for reward in rewards:
        row = stock.get(reward.id, Stock(stock=reward.stock, redeemed=0))
        remaining = None if row.stock is None else max(row.stock - row.redeemed, 0)
        entries.append({"id": reward.id, "name": reward.name, "cost": reward.cost, "remaining": remaining})
    return {"rewards": entries}


@dataclass(frozen=True)
class ManifestCounts:
    users: int  # users in the program
    users_written: int
    leaderboards: int
    rewards: int


def manifest_document(
    program: Program,
    version: int,
    generated_at: datetime,
    last_scored_position: int,
    files: Iterable[str],
    counts: ManifestCounts,
    windows: Mapping[str, str],
) -> dict[str, Any]:
    schedule = program.spec.schedule
    written = sorted(files)
    return {
        "version": version,
        "generatedAt": rfc3339(generated_at),
        "program": program.name,
        "schedule": {
            "start": rfc3339(schedule.start),
            "end": rfc3339(schedule.end),
            "timezone": schedule.timezone,
        },
        "lastScoredPosition": last_scored_position,
        "windows": dict(windows),
        "files": written,
        "counts": {
            "users": counts.users,
            "usersWritten": counts.users_written,
            "leaderboards": counts.leaderboards,
            "rewards": counts.rewards,
            "files": len(written),
        },
    }
