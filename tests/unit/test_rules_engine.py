"""The rules engine against hand-computed examples of every scoring semantic in DESIGN.md."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from gamify.program import Condition, ProgramSpec, parse_program
from gamify.rules.engine import (
    Outcome,
    RulesEngine,
    ScorableEvent,
    UserState,
    base_points,
    boosted,
    condition_holds,
    multiplier_at,
)

START = datetime(2027, 1, 1, tzinfo=UTC)
_ids = itertools.count()


def make_spec(
    rules: list[dict[str, Any]],
    *,
    boosts: list[dict[str, Any]] | None = None,
    badges: list[dict[str, Any]] | None = None,
    rewards: list[dict[str, Any]] | None = None,
    mode: str = "both",
    timezone: str = "UTC",
) -> ProgramSpec:
    spec: dict[str, Any] = {
        "tenant": "acme",
        "mode": mode,
        "schedule": {"start": "2027-01-01T00:00:00Z", "end": "2027-03-01T00:00:00Z", "timezone": timezone},
        "rules": rules,
        "boosts": boosts or [],
        "badges": badges or [],
        "rewards": rewards or [],
    }
    return parse_program({"metadata": {"name": "p"}, "spec": spec}).spec


def event(
    type_: str,
    at: datetime = START + timedelta(days=10),
    user: str = "u1",
    **properties: Any,
) -> ScorableEvent:
    return ScorableEvent(f"e{next(_ids)}", type_, user, at, properties)


def redeem(reward: Any, user: str = "u1", at: datetime = START + timedelta(days=10)) -> ScorableEvent:
    return ScorableEvent(f"r{next(_ids)}", "reward.redeem", user, at, {"reward": reward})


def boost(name: str, start: datetime, end: datetime, multiplier: float) -> dict[str, Any]:
    return {"name": name, "start": start.isoformat(), "end": end.isoformat(), "multiplier": multiplier}


STEPS = {"id": "steps", "event": "activity.steps", "points": 10, "unit": {"property": "steps", "size": 1000}}
CHECKIN = {"id": "checkin", "event": "app.checkin", "points": 5}


def score_all(
    engine: RulesEngine, events: list[ScorableEvent], state: UserState | None = None
) -> list[Outcome]:
    state = state or UserState("u1")
    stock: dict[str, int | None] = {}
    return [engine.score(e, state, stock) for e in events]


# --- points ----------------------------------------------------------------------------------


def test_per_event_points() -> None:
    engine = RulesEngine(make_spec([CHECKIN]))
    state = UserState("u1")
    outcome = engine.score(event("app.checkin"), state, {})
    assert outcome.points == 5
    assert [(a.rule_id, a.base_points, a.multiplier, a.points) for a in outcome.awards] == [
        ("checkin", 5, Decimal(1), 5)
    ]
    assert outcome.local_day == date(2027, 1, 11)
    assert state.points == 5 and state.balance == 5


def test_event_of_another_type_scores_nothing() -> None:
    engine = RulesEngine(make_spec([CHECKIN]))
    state = UserState("u1")
    outcome = engine.score(event("app.opened"), state, {})
    assert outcome.awards == [] and outcome.points == 0 and state.points == 0


@pytest.mark.parametrize(
    ("steps", "points"),
    [(4999, 40), (1000, 10), (999, 0), (0, 0), (1999.9, 10), (10_000, 100), (123_456, 1230)],
)
def test_unit_points_are_points_times_whole_units(steps: float, points: int) -> None:
    spec = make_spec([STEPS])
    assert base_points(spec.rules[0], {"steps": steps}) == points
    outcome = RulesEngine(spec).score(event("activity.steps", steps=steps), UserState("u1"), {})
    assert outcome.points == points
    assert len(outcome.awards) == (1 if points else 0)  # no zero awards


def test_unit_division_is_exact_decimal() -> None:
    # In binary floating point 0.3 / 0.1 == 2.9999999999999996, which would floor to 2.
    rule = make_spec(
        [{"id": "km", "event": "run", "points": 7, "unit": {"property": "km", "size": 0.1}}]
    ).rules[0]
    assert base_points(rule, {"km": 0.3}) == 21
    assert base_points(rule, {"km": 0.7}) == 49


@pytest.mark.parametrize(
    "properties",
    [
        {},
        {"steps": "5000"},
        {"steps": True},
        {"steps": -5000},
        {"steps": None},
        {"steps": [5000]},
        {"steps": float("nan")},
        {"steps": float("inf")},
        {"other": 5000},
    ],
    ids=["missing", "string", "bool", "negative", "null", "list", "nan", "inf", "other-property"],
)
def test_unit_property_that_is_not_a_usable_number_awards_nothing(properties: dict[str, Any]) -> None:
    engine = RulesEngine(make_spec([STEPS]))
    state = UserState("u1")
    outcome = engine.score(event("activity.steps", **properties), state, {})
    assert outcome.awards == [] and state.points == 0


def test_zero_point_rule_awards_nothing() -> None:
    engine = RulesEngine(make_spec([{"id": "z", "event": "app.checkin", "points": 0}]))
    assert engine.score(event("app.checkin"), UserState("u1"), {}).awards == []


def test_two_rules_on_one_event_type_both_award() -> None:
    rules = [STEPS, {"id": "walked", "event": "activity.steps", "points": 3}]
    state = UserState("u1")
    outcome = RulesEngine(make_spec(rules)).score(event("activity.steps", steps=2500), state, {})
    assert [(a.rule_id, a.points) for a in outcome.awards] == [("steps", 20), ("walked", 3)]
    assert outcome.points == 23 and state.points == 23


# --- conditions ------------------------------------------------------------------------------

CONDITION_CASES: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    ({"op": "eq", "value": "run"}, {"p": "run"}, True),
    ({"op": "eq", "value": "run"}, {"p": "walk"}, False),
    ({"op": "eq", "value": 1}, {"p": 1.0}, True),
    ({"op": "eq", "value": 1}, {"p": True}, False),  # JSON true is not the number 1
    ({"op": "eq", "value": False}, {"p": 0}, False),
    ({"op": "eq", "value": True}, {"p": True}, True),
    ({"op": "eq", "value": "run"}, {}, False),
    ({"property": "p", "value": "run"}, {"p": "run"}, True),  # op defaults to eq
    ({"op": "ne", "value": "run"}, {"p": "walk"}, True),
    ({"op": "ne", "value": "run"}, {"p": "run"}, False),
    ({"op": "ne", "value": 1}, {"p": True}, True),
    ({"op": "ne", "value": "run"}, {}, False),  # a missing property satisfies no comparison
    ({"op": "gt", "value": 5}, {"p": 6}, True),
    ({"op": "gt", "value": 5}, {"p": 5}, False),
    ({"op": "gt", "value": 5}, {"p": "6"}, False),
    ({"op": "gt", "value": 0}, {"p": True}, False),
    ({"op": "gt", "value": 0.1}, {"p": 0.30000000000000004}, True),
    ({"op": "gte", "value": 5}, {"p": 5}, True),
    ({"op": "gte", "value": 5}, {"p": 4.999}, False),
    ({"op": "lt", "value": 5}, {"p": 4}, True),
    ({"op": "lt", "value": 5}, {"p": 5}, False),
    ({"op": "lt", "value": 5}, {}, False),
    ({"op": "lte", "value": 5}, {"p": 5}, True),
    ({"op": "lte", "value": 5}, {"p": 5.5}, False),
    ({"op": "in", "value": ["a", "b"]}, {"p": "b"}, True),
    ({"op": "in", "value": ["a", "b"]}, {"p": "c"}, False),
    ({"op": "in", "value": [1, 2]}, {"p": True}, False),
    ({"op": "in", "value": [1, 2]}, {"p": 2.0}, True),
    ({"op": "in", "value": ["a"]}, {}, False),
    ({"op": "exists"}, {"p": None}, True),
    ({"op": "exists"}, {}, False),
    ({"op": "exists", "value": True}, {"p": 0}, True),
    ({"op": "exists", "value": False}, {}, True),
    ({"op": "exists", "value": False}, {"p": 1}, False),
]


@pytest.mark.parametrize(("condition", "properties", "holds"), CONDITION_CASES)
def test_condition_ops(condition: dict[str, Any], properties: dict[str, Any], holds: bool) -> None:
    parsed = Condition.model_validate({"property": "p", **condition})
    assert condition_holds(parsed, properties) is holds
    rule = {"id": "r", "event": "x", "points": 4, "conditions": [{"property": "p", **condition}]}
    outcome = RulesEngine(make_spec([rule])).score(event("x", **properties), UserState("u1"), {})
    assert outcome.points == (4 if holds else 0)


def test_all_conditions_must_hold() -> None:
    rule = {
        "id": "long-run",
        "event": "activity.run",
        "points": 10,
        "conditions": [
            {"property": "km", "op": "gte", "value": 10},
            {"property": "kind", "value": "outdoor"},
        ],
    }
    engine = RulesEngine(make_spec([rule]))
    assert engine.score(event("activity.run", km=12, kind="outdoor"), UserState("u1"), {}).points == 10
    assert engine.score(event("activity.run", km=12, kind="gym"), UserState("u1"), {}).points == 0
    assert engine.score(event("activity.run", km=9, kind="outdoor"), UserState("u1"), {}).points == 0


# --- boosts ----------------------------------------------------------------------------------

LAUNCH = boost("launch", START, START + timedelta(days=7), 1.5)
NEW_YEAR = boost("new-year", START, START + timedelta(days=1), 2)


def test_stacked_boosts_multiply() -> None:
    spec = make_spec([CHECKIN], boosts=[LAUNCH, NEW_YEAR])
    assert multiplier_at(spec, START + timedelta(hours=1)) == Decimal(3)
    assert multiplier_at(spec, START + timedelta(days=2)) == Decimal("1.5")
    assert multiplier_at(spec, START + timedelta(days=8)) == Decimal(1)
    outcome = RulesEngine(spec).score(event("app.checkin", START + timedelta(hours=1)), UserState("u1"), {})
    assert outcome.awards[0].multiplier == Decimal(3)
    assert outcome.awards[0].base_points == 5
    assert outcome.points == 15


def test_boosted_points_round_down() -> None:
    spec = make_spec([{"id": "seven", "event": "x", "points": 7}], boosts=[LAUNCH])
    assert RulesEngine(spec).score(event("x", START + timedelta(days=1)), UserState("u1"), {}).points == 10
    assert boosted(7, Decimal("1.5")) == 10
    assert boosted(1, Decimal("0.5")) == 0
    assert boosted(3, Decimal("0.5")) == 1


def test_a_boost_that_rounds_to_zero_awards_nothing() -> None:
    spec = make_spec(
        [{"id": "one", "event": "x", "points": 1}],
        boosts=[boost("half", START, START + timedelta(days=9), 0.5)],
    )
    state = UserState("u1")
    assert RulesEngine(spec).score(event("x", START + timedelta(days=1)), state, {}).awards == []
    assert state.points == 0 and state.rule_awards.get("one", 0) == 0


def test_multiplier_is_exact_decimal() -> None:
    # A YAML 1.1 becomes Decimal("1.1"), not the binary float 1.100000000000000088817841970012523.
    spec = make_spec(
        [{"id": "ten", "event": "x", "points": 10}, {"id": "hundred", "event": "y", "points": 100}],
        boosts=[
            boost("b", START, START + timedelta(days=9), 1.1),
            boost("c", START, START + timedelta(days=9), 1.15),
        ],
    )
    assert spec.boosts[0].multiplier == Decimal("1.1")
    engine = RulesEngine(spec)
    at = START + timedelta(days=1)
    # 10 x 1.1 x 1.15 = 12.65 -> 12;  100 x 1.265 = 126.5 -> 126
    assert engine.score(event("x", at), UserState("u1"), {}).points == 12
    assert engine.score(event("y", at), UserState("u1"), {}).points == 126
    assert boosted(10, Decimal("1.1")) == 11
    assert boosted(3, Decimal("1.1")) == 3  # 3.3
    assert int(100 * 1.15) == 114  # what binary floats would give: 114.99999999999999
    assert boosted(100, Decimal("1.15")) == 115
    assert boosted(20, Decimal("1.15")) == 23


def test_boost_window_is_start_inclusive_end_exclusive() -> None:
    end = START + timedelta(days=7)
    spec = make_spec(
        [{"id": "ten", "event": "x", "points": 10}], boosts=[boost("b", START + timedelta(days=1), end, 2)]
    )
    engine = RulesEngine(spec)

    def points_at(at: datetime) -> int:
        return engine.score(event("x", at), UserState("u1"), {}).points

    assert points_at(START + timedelta(days=1)) == 20
    assert points_at(START + timedelta(days=1) - timedelta(microseconds=1)) == 10
    assert points_at(end - timedelta(microseconds=1)) == 20
    assert points_at(end) == 10


def test_boost_is_by_occurred_at_in_any_offset() -> None:
    spec = make_spec(
        [{"id": "ten", "event": "x", "points": 10}], boosts=[boost("b", START, START + timedelta(days=1), 2)]
    )
    sao_paulo_evening = datetime.fromisoformat("2027-01-01T20:59:00-03:00")  # 23:59 UTC: inside
    assert RulesEngine(spec).score(event("x", sao_paulo_evening), UserState("u1"), {}).points == 20


# --- daily caps ------------------------------------------------------------------------------


def test_daily_cap_applies_after_boosts() -> None:
    capped = {**STEPS, "dailyCap": 100}
    spec = make_spec([capped], boosts=[boost("double", START, START + timedelta(days=9), 2)])
    engine = RulesEngine(spec)
    state = UserState("u1")
    day = START + timedelta(days=1, hours=9)
    outcomes = score_all(
        engine,
        [
            event("activity.steps", day, steps=3000),
            event("activity.steps", day, steps=3000),
            event("activity.steps", day, steps=9000),
        ],
        state,
    )
    # boosted 60, then 60 -> only 40 left, then nothing
    assert [o.points for o in outcomes] == [60, 40, 0]
    assert outcomes[1].awards[0].base_points == 30 and outcomes[1].awards[0].multiplier == 2
    assert outcomes[2].awards == []
    assert state.points == 100
    assert state.day_points[("steps", date(2027, 1, 2))] == 100
    # The next day has its own cap.
    assert engine.score(event("activity.steps", day + timedelta(days=1), steps=3000), state, {}).points == 60


def test_daily_cap_is_per_rule() -> None:
    rules = [{**CHECKIN, "dailyCap": 5}, {"id": "bonus", "event": "app.checkin", "points": 2, "dailyCap": 3}]
    engine = RulesEngine(make_spec(rules))
    state = UserState("u1")
    outcomes = score_all(engine, [event("app.checkin") for _ in range(3)], state)
    assert [[(a.rule_id, a.points) for a in o.awards] for o in outcomes] == [
        [("checkin", 5), ("bonus", 2)],
        [("bonus", 1)],
        [],
    ]
    assert state.points == 8


def test_daily_cap_is_per_user() -> None:
    engine = RulesEngine(make_spec([{**CHECKIN, "dailyCap": 5}]))
    alice, bob = UserState("alice"), UserState("bob")
    assert engine.score(event("app.checkin", user="alice"), alice, {}).points == 5
    assert engine.score(event("app.checkin", user="bob"), bob, {}).points == 5
    assert engine.score(event("app.checkin", user="alice"), alice, {}).points == 0


def test_daily_cap_uses_the_program_time_zone_day() -> None:
    # 2027-01-06T01:30Z is 2027-01-05 22:30 in São Paulo (UTC-3): it counts against the 5th.
    engine = RulesEngine(make_spec([{**STEPS, "dailyCap": 100}], timezone="America/Sao_Paulo"))
    state = UserState("u1")
    evening_5th = datetime(2027, 1, 5, 20, 0, tzinfo=UTC)  # 17:00 local, the 5th
    late_5th = datetime(2027, 1, 6, 1, 30, tzinfo=UTC)  # 22:30 local, still the 5th
    morning_6th = datetime(2027, 1, 6, 3, 0, tzinfo=UTC)  # 00:00 local, the 6th
    first = engine.score(event("activity.steps", evening_5th, steps=8000), state, {})
    second = engine.score(event("activity.steps", late_5th, steps=8000), state, {})
    third = engine.score(event("activity.steps", morning_6th, steps=8000), state, {})
    assert (first.points, second.points, third.points) == (80, 20, 80)
    assert second.local_day == date(2027, 1, 5) and second.awards[0].local_day == date(2027, 1, 5)
    assert third.local_day == date(2027, 1, 6)
    # In UTC the same events would fall on the 5th, the 6th and the 6th.
    utc_engine = RulesEngine(make_spec([{**STEPS, "dailyCap": 100}]))
    utc_state = UserState("u1")
    assert [
        utc_engine.score(event("activity.steps", at, steps=8000), utc_state, {}).points
        for at in (evening_5th, late_5th, morning_6th)
    ] == [80, 80, 20]


# --- once per user ---------------------------------------------------------------------------


def test_once_per_user() -> None:
    engine = RulesEngine(make_spec([{**CHECKIN, "oncePerUser": True}]))
    state = UserState("u1")
    outcomes = score_all(
        engine, [event("app.checkin"), event("app.checkin", START + timedelta(days=20))], state
    )
    assert [o.points for o in outcomes] == [5, 0]
    assert state.points == 5 and state.rule_awards["checkin"] == 1
    assert engine.score(event("app.checkin", user="u2"), UserState("u2"), {}).points == 5


def test_once_per_user_waits_for_an_event_that_earns_something() -> None:
    rule = {**STEPS, "oncePerUser": True}
    engine = RulesEngine(make_spec([rule]))
    state = UserState("u1")
    outcomes = score_all(
        engine,
        [
            event("activity.steps", steps=500),
            event("activity.steps", steps=2000),
            event("activity.steps", steps=9000),
        ],
        state,
    )
    assert [o.points for o in outcomes] == [0, 20, 0]


# --- badges ----------------------------------------------------------------------------------


def test_badges_by_points_and_by_rule_count_are_awarded_once() -> None:
    badges = [
        {"id": "first-10", "name": "First 10", "minPoints": 10},
        {"id": "regular", "name": "Regular", "rule": "checkin", "minCount": 3},
    ]
    engine = RulesEngine(make_spec([CHECKIN, STEPS], badges=badges))
    state = UserState("u1")
    outcomes = score_all(
        engine,
        [
            event("app.checkin"),
            event("app.checkin"),
            event("activity.steps", steps=100),
            event("app.checkin"),
            event("app.checkin"),
        ],
        state,
    )
    assert [o.badges for o in outcomes] == [[], ["first-10"], [], ["regular"], []]
    assert state.badges == {"first-10", "regular"}


def test_badge_by_points_counts_earned_not_balance() -> None:
    engine = RulesEngine(
        make_spec(
            [CHECKIN],
            badges=[{"id": "ten", "name": "Ten", "minPoints": 10}],
            rewards=[{"id": "pen", "name": "Pen", "cost": 5}],
        )
    )
    state = UserState("u1")
    stock: dict[str, int | None] = {}
    engine.score(event("app.checkin"), state, stock)
    assert engine.score(redeem("pen"), state, stock).redemption is not None
    assert state.balance == 0
    assert engine.score(event("app.checkin"), state, stock).badges == ["ten"]


def test_several_badges_can_come_with_one_event() -> None:
    badges = [{"id": "a", "name": "A", "minPoints": 1}, {"id": "b", "name": "B", "minPoints": 5}]
    outcome = RulesEngine(make_spec([CHECKIN], badges=badges)).score(
        event("app.checkin"), UserState("u1"), {}
    )
    assert outcome.badges == ["a", "b"]


# --- redemption ------------------------------------------------------------------------------

MUG = {"id": "mug", "name": "Mug", "cost": 50, "stock": 1, "perUserLimit": 1}
PEN = {"id": "pen", "name": "Pen", "cost": 10}  # unlimited stock, no per-user limit
HAT = {"id": "hat", "name": "Hat", "cost": 10, "stock": 5, "perUserLimit": 2}


def rich(user: str, points: int) -> UserState:
    return UserState(user, points=points)


def test_fulfilled_redemption_reduces_balance_not_points() -> None:
    engine = RulesEngine(make_spec([CHECKIN], rewards=[MUG]))
    state = rich("u1", 80)
    stock: dict[str, int | None] = {"mug": 1}
    outcome = engine.score(redeem("mug"), state, stock)
    assert outcome.redemption is not None
    assert (outcome.redemption.status, outcome.redemption.reason, outcome.redemption.cost) == (
        "fulfilled",
        None,
        50,
    )
    assert outcome.awards == [] and outcome.points == 0
    assert (state.points, state.spent, state.balance) == (80, 50, 30)
    assert stock == {"mug": 0}
    assert state.redeemed["mug"] == 1


def test_insufficient_balance() -> None:
    engine = RulesEngine(make_spec([CHECKIN], rewards=[MUG]))
    state = UserState("u1", points=60, spent=20)  # balance 40 < 50
    stock: dict[str, int | None] = {"mug": 1}
    redemption = engine.score(redeem("mug"), state, stock).redemption
    assert redemption is not None and redemption.status == "rejected"
    assert redemption.reason is not None and "insufficient balance" in redemption.reason
    assert (state.points, state.spent, state.balance) == (60, 20, 40)
    assert stock == {"mug": 1}


def test_out_of_stock_second_user_is_rejected() -> None:
    engine = RulesEngine(make_spec([CHECKIN], rewards=[MUG]))
    stock: dict[str, int | None] = {"mug": 1}
    alice, bob = rich("alice", 100), rich("bob", 100)
    first = engine.score(redeem("mug", "alice"), alice, stock).redemption
    second = engine.score(redeem("mug", "bob"), bob, stock).redemption
    assert first is not None and first.status == "fulfilled"
    assert second is not None and second.status == "rejected" and second.reason == "out of stock"
    assert bob.balance == 100 and stock == {"mug": 0}


def test_stock_defaults_to_the_programs_when_missing_from_the_map() -> None:
    engine = RulesEngine(make_spec([CHECKIN], rewards=[MUG]))
    stock: dict[str, int | None] = {}
    assert engine.score(redeem("mug", "alice"), rich("alice", 100), stock).redemption.status == "fulfilled"  # type: ignore[union-attr]
    assert stock == {"mug": 0}
    assert engine.score(redeem("mug", "bob"), rich("bob", 100), stock).redemption.status == "rejected"  # type: ignore[union-attr]


def test_per_user_limit() -> None:
    engine = RulesEngine(make_spec([CHECKIN], rewards=[HAT]))
    state = rich("u1", 100)
    stock: dict[str, int | None] = {"hat": 5}
    results = [engine.score(redeem("hat"), state, stock).redemption for _ in range(3)]
    assert [r.status for r in results if r] == ["fulfilled", "fulfilled", "rejected"]
    assert results[2] is not None and results[2].reason == "per-user limit of 2 reached"
    assert state.balance == 80 and stock == {"hat": 3}
    # Another user has their own limit.
    assert engine.score(redeem("hat", "u2"), rich("u2", 10), stock).redemption.status == "fulfilled"  # type: ignore[union-attr]


def test_unknown_reward_and_bad_reward_property() -> None:
    engine = RulesEngine(make_spec([CHECKIN], rewards=[PEN]))
    state = rich("u1", 100)
    unknown = engine.score(redeem("yacht"), state, {}).redemption
    assert unknown is not None and unknown.status == "rejected" and "unknown reward" in (unknown.reason or "")
    for bad in (None, 7, ["pen"]):
        redemption = engine.score(redeem(bad), state, {}).redemption
        assert redemption is not None and redemption.status == "rejected"
        assert "properties.reward" in (redemption.reason or "")
    assert state.balance == 100


def test_ranking_mode_program_rejects_redemption() -> None:
    engine = RulesEngine(make_spec([CHECKIN], mode="ranking"))
    state = rich("u1", 100)
    redemption = engine.score(redeem("mug"), state, {}).redemption
    assert redemption is not None and redemption.status == "rejected"
    assert redemption.reason == "this program has no rewards"
    assert state.balance == 100


def test_unlimited_stock() -> None:
    engine = RulesEngine(make_spec([CHECKIN], rewards=[PEN]))
    state = rich("u1", 100)
    stock: dict[str, int | None] = {"pen": None}
    results = [engine.score(redeem("pen"), state, stock).redemption for _ in range(11)]
    assert [r.status for r in results if r] == ["fulfilled"] * 10 + ["rejected"]
    assert stock == {"pen": None}
    assert (state.points, state.spent, state.balance) == (100, 100, 0)


def test_balance_is_points_minus_spent_through_earning_and_spending() -> None:
    engine = RulesEngine(make_spec([CHECKIN], rewards=[PEN]))
    state = UserState("u1")
    stock: dict[str, int | None] = {}
    for _ in range(3):
        engine.score(event("app.checkin"), state, stock)
    engine.score(redeem("pen"), state, stock)
    engine.score(event("app.checkin"), state, stock)
    assert (state.points, state.spent, state.balance) == (20, 10, 10)


# --- state loaded from a database ------------------------------------------------------------


def test_state_with_plain_dicts_works() -> None:
    """The scorer may build UserState from database rows as plain dicts, not defaultdicts."""
    rules = [{**CHECKIN, "oncePerUser": True}, {**STEPS, "dailyCap": 100}]
    badges = [{"id": "walker", "name": "Walker", "rule": "steps", "minCount": 2}]
    engine = RulesEngine(make_spec(rules, badges=badges, rewards=[HAT]))
    state = UserState(
        "u1",
        points=90,
        spent=0,
        day_points={("steps", date(2027, 1, 11)): 90},
        rule_awards={"steps": 1},
        badges=set(),
        redeemed={},
    )
    stock: dict[str, int | None] = {}
    assert engine.score(event("app.checkin"), state, stock).points == 5
    steps = engine.score(event("activity.steps", steps=5000), state, stock)
    assert steps.points == 10 and steps.badges == ["walker"]
    assert engine.score(redeem("hat"), state, stock).redemption.status == "fulfilled"  # type: ignore[union-attr]
    assert state.points == 105 and state.balance == 95 and state.redeemed == {"hat": 1}


def test_a_huge_unit_property_is_capped_at_max_award_not_overflowing() -> None:
    from gamify.program import Rule
    from gamify.rules.engine import MAX_AWARD, base_points, boosted

    rule = Rule(id="run", event="activity.run", points=1000, unit={"property": "meters", "size": 1})
    assert base_points(rule, {"meters": 10**15}) == MAX_AWARD
    assert boosted(MAX_AWARD, Decimal(100)) == MAX_AWARD
    assert base_points(rule, {"meters": 7}) == 7000
