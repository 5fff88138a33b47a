"""Snapshot documents and ranking, as pure functions (DESIGN.md, "Snapshot JSON")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from gamify.program import Program, parse_program
from gamify.snapshots import builder
from gamify.snapshots.builder import BadgeAward, Redemption, Stock, UserTotals

NOW = datetime(2027, 1, 6, 15, 0, tzinfo=UTC)  # a Wednesday; 12:00 in São Paulo


def make_program(mode: str = "both", **spec: Any) -> Program:
    document: dict[str, Any] = {
        "apiVersion": "gamification.io/v1alpha1",
        "kind": "GamificationProgram",
        "metadata": {"name": "acme-2027"},
        "spec": {
            "tenant": "acme",
            "schedule": {
                "start": "2027-01-01T00:00:00-03:00",
                "end": "2027-02-01T00:00:00-03:00",
                "timezone": "America/Sao_Paulo",
            },
            "mode": mode,
            "rules": [{"id": "steps", "event": "activity.steps", "points": 10}],
            **spec,
        },
    }
    if mode != "rewards" and "leaderboards" not in spec:
        document["spec"]["leaderboards"] = [
            {"id": "overall", "window": "all-time", "size": 3},
            {"id": "today", "window": "daily"},
            {"id": "week", "window": "weekly"},
        ]
    if mode != "ranking" and "rewards" not in spec:
        document["spec"]["rewards"] = [
            {"id": "mug", "name": "Mug", "cost": 100, "stock": 5},
            {"id": "day-off", "name": "Day off", "cost": 1000},
        ]
    return parse_program(document)


# --- ranking ---------------------------------------------------------------------------------


def test_standard_competition_ranking_with_ties_ordered_by_user_id() -> None:
    ranking = builder.rank([("carol", 50), ("bob", 80), ("dave", 80), ("alice", 80), ("erin", 10)])
    assert [(e.rank, e.user, e.points) for e in ranking.entries] == [
        (1, "alice", 80),
        (1, "bob", 80),
        (1, "dave", 80),
        (4, "carol", 50),
        (5, "erin", 10),
    ]
    assert ranking.rank_of["dave"] == 1
    assert ranking.rank_of["carol"] == 4


def test_ranking_is_1_2_2_4() -> None:
    ranking = builder.rank([("a", 9), ("b", 7), ("c", 7), ("d", 3)])
    assert [e.rank for e in ranking.entries] == [1, 2, 2, 4]


def test_only_users_with_points_take_part() -> None:
    ranking = builder.rank([("a", 5), ("zero", 0), ("negative", -3)])
    assert ranking.participants == 1
    assert "zero" not in ranking.rank_of
    assert builder.rank([]).participants == 0


def test_user_ids_order_by_code_point_not_case_folded() -> None:
    ranking = builder.rank([("b", 1), ("B", 1), ("a", 1)])
    assert [e.user for e in ranking.entries] == ["B", "a", "b"]


def test_board_lists_at_most_size_entries_but_counts_every_participant() -> None:
    program = make_program()
    board = program.spec.leaderboards[0]  # size 3
    ranking = builder.rank([(f"u{i}", 100 - i) for i in range(10)])
    document = builder.leaderboard_document(board, ranking, NOW)
    assert document == {
        "board": "overall",
        "window": "all-time",
        "generatedAt": "2027-01-06T15:00:00.000Z",
        "participants": 10,
        "entries": [
            {"rank": 1, "user": "u0", "points": 100},
            {"rank": 2, "user": "u1", "points": 99},
            {"rank": 3, "user": "u2", "points": 98},
        ],
    }


def test_ranked_within_includes_ties_at_the_cut() -> None:
    ranking = builder.rank([("a", 9), ("b", 5), ("c", 5), ("d", 1)])
    assert ranking.ranked_within(2) == ["a", "b", "c"]
    assert len(ranking.top(2)) == 2


# --- windows ---------------------------------------------------------------------------------


def test_board_windows_use_the_program_time_zone() -> None:
    program = make_program()
    # 01:30 UTC on Jan 7 is still Jan 6 in São Paulo (UTC-3).
    windows = builder.board_windows(program.spec, datetime(2027, 1, 7, 1, 30, tzinfo=UTC))
    assert windows == {"overall": "all", "today": "d:2027-01-06", "week": "w:2027-W01"}


def test_user_with_points_only_yesterday_is_not_on_todays_board() -> None:
    program = make_program()
    windows = builder.board_windows(program.spec, NOW)
    points = {
        "d:2027-01-05": [("yesterday-only", 500), ("both-days", 10)],
        "d:2027-01-06": [("both-days", 20), ("today-only", 5)],
    }
    ranking = builder.rank(points[windows["today"]])
    assert [e.user for e in ranking.entries] == ["both-days", "today-only"]
    assert builder.user_ranks("yesterday-only", {"today": ranking}) == {"today": None}


def test_ended_program_keeps_showing_its_last_day_and_week() -> None:
    program = make_program()  # ends 2027-02-01T00:00-03:00: the last day is Jan 31 (a Sunday)
    later = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
    assert builder.reference_time(later, program.spec.schedule) < program.spec.schedule.end
    windows = builder.board_windows(program.spec, later)
    assert windows == {"overall": "all", "today": "d:2027-01-31", "week": "w:2027-W04"}


def test_running_program_uses_now() -> None:
    program = make_program()
    assert builder.reference_time(NOW, program.spec.schedule) == NOW


def test_rewards_mode_has_no_boards_and_ranking_mode_no_catalog() -> None:
    rewards_only = make_program(mode="rewards")
    assert builder.boards_of(rewards_only.spec) == []
    assert builder.board_windows(rewards_only.spec, NOW) == {}
    assert builder.has_catalog(rewards_only.spec)
    ranking_only = make_program(mode="ranking")
    assert not builder.has_catalog(ranking_only.spec)
    assert len(builder.boards_of(ranking_only.spec)) == 3


# --- which users are rewritten ---------------------------------------------------------------


def test_rank_change_at_the_top_rewrites_the_user() -> None:
    rankings = {"overall": builder.rank([("a", 30), ("b", 20), ("c", 10), ("d", 5)])}
    sizes = {"overall": 3}
    published = {"a": {"overall": 1}, "b": {"overall": 3}, "c": {"overall": 2}, "d": {"overall": 9}}
    # b rose 3 -> 2, c fell 2 -> 3; d moved too but outside the top, so it waits for its own change.
    assert builder.rank_changed_users(rankings, sizes, published) == {"b", "c"}


def test_user_who_dropped_out_of_the_top_is_rewritten() -> None:
    rankings = {"overall": builder.rank([("a", 30), ("b", 20), ("c", 10), ("d", 5)])}
    published = {"a": {"overall": 1}, "b": {"overall": 2}, "c": {"overall": 3}, "d": {"overall": 3}}
    assert builder.rank_changed_users(rankings, {"overall": 3}, published) == {"d"}


def test_new_window_clears_the_previous_tops_ranks() -> None:
    rankings = {"today": builder.rank([])}  # a new day: nobody has points yet
    published = {"a": {"today": 1}, "b": {"today": 2}, "far": {"today": 500}}
    assert builder.rank_changed_users(rankings, {"today": 100}, published) == {"a", "b"}


def test_unchanged_top_rewrites_nobody() -> None:
    rankings = {"overall": builder.rank([("a", 30), ("b", 20)])}
    published = {"a": {"overall": 1}, "b": {"overall": 2}}
    assert builder.rank_changed_users(rankings, {"overall": 3}, published) == set()


def test_top_user_never_published_is_written() -> None:
    rankings = {"overall": builder.rank([("a", 30)])}
    assert builder.rank_changed_users(rankings, {"overall": 3}, {}) == {"a"}


def test_published_form_keeps_only_ranks() -> None:
    assert builder.published_form({"overall": 3, "today": None}) == {"overall": 3}


# --- documents -------------------------------------------------------------------------------


def test_user_document_fields_are_the_contract() -> None:
    at = datetime(2027, 1, 5, 12, tzinfo=UTC)
    document = builder.user_document(
        UserTotals(user="u-1", points=350, spent=100),
        {"overall": 2, "today": None},
        [BadgeAward("first-500", at + timedelta(hours=1)), BadgeAward("early-bird", at)],
        [
            Redemption("e-2", "mug", "rejected", "insufficient balance", at + timedelta(minutes=5)),
            Redemption("e-1", "mug", "fulfilled", None, at),
        ],
        NOW,
    )
    assert document == {
        "user": "u-1",
        "points": 350,
        "balance": 250,
        "ranks": {"overall": 2, "today": None},
        "badges": ["early-bird", "first-500"],
        "redemptions": [
            {"id": "e-1", "reward": "mug", "status": "fulfilled"},
            {"id": "e-2", "reward": "mug", "status": "rejected", "reason": "insufficient balance"},
        ],
        "updatedAt": "2027-01-06T15:00:00.000Z",
    }
    assert list(document) == ["user", "points", "balance", "ranks", "badges", "redemptions", "updatedAt"]


def test_catalog_remaining_stock_and_unlimited() -> None:
    program = make_program()
    stock = {"mug": Stock(stock=5, redeemed=2)}
    assert builder.catalog_document(program.spec.rewards, stock) == {
        "rewards": [
            {"id": "mug", "name": "Mug", "cost": 100, "remaining": 3},
            {"id": "day-off", "name": "Day off", "cost": 1000, "remaining": None},
        ]
    }
    # No stock row yet: the spec's stock, nothing redeemed; never negative.
    assert builder.catalog_document(program.spec.rewards, {})["rewards"][0]["remaining"] == 5
    oversold = builder.catalog_document(program.spec.rewards, {"mug": Stock(stock=1, redeemed=3)})
    assert oversold["rewards"][0]["remaining"] == 0


def test_manifest_document() -> None:
    program = make_program()
    document = builder.manifest_document(
        program,
        version=7,
        generated_at=NOW,
        last_scored_position=1234,
        files=["users/b.json", "catalog.json", "leaderboards/overall.json"],
        counts=builder.ManifestCounts(users=10, users_written=1, leaderboards=3, rewards=2),
        windows={"overall": "all", "today": "d:2027-01-06"},
    )
    assert document == {
        "version": 7,
        "generatedAt": "2027-01-06T15:00:00.000Z",
        "program": "acme-2027",
        "schedule": {
            "start": "2027-01-01T03:00:00.000Z",
            "end": "2027-02-01T03:00:00.000Z",
            "timezone": "America/Sao_Paulo",
        },
        "lastScoredPosition": 1234,
        "windows": {"overall": "all", "today": "d:2027-01-06"},
        "files": ["catalog.json", "leaderboards/overall.json", "users/b.json"],
        "counts": {"users": 10, "usersWritten": 1, "leaderboards": 3, "rewards": 2, "files": 3},
    }


def test_encoding_is_compact_and_stable() -> None:
    document = {"b": 1, "a": [1, 2], "c": None}
    data = builder.encode(document)
    assert data == b'{"b":1,"a":[1,2],"c":null}'
    assert builder.encode(orjson.loads(data)) == data


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (builder.leaderboard_key("overall"), "leaderboards/overall.json"),
        (builder.user_key("u-1"), "users/u-1.json"),
        (builder.CATALOG_KEY, "catalog.json"),
        (builder.MANIFEST_KEY, "manifest.json"),
    ],
)
def test_object_keys(key: str, expected: str) -> None:
    assert key == expected
