"""Properties of the rules engine over random programs and random event sequences.

The reference arithmetic here uses Fractions (not the engine's Decimals) so that a shared
rounding mistake cannot hide.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gamify.program import ProgramSpec, parse_program
from gamify.rules.engine import Outcome, RulesEngine, ScorableEvent, UserState

START = datetime(2027, 1, 1, tzinfo=UTC)
DAYS = 6
EVENT_TYPES = ["a.x", "b.y", "c.z"]
USERS = ["u1", "u2", "u3"]
ZONES = ["UTC", "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Chatham", "Asia/Tokyo"]
MULTIPLIERS = [0.5, 0.75, 1.1, 1.15, 1.5, 2, 3]
UNIT_SIZES = [1, 3, 0.5, 0.1, 1000]

PROPERTIES = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- strategies ------------------------------------------------------------------------------


@st.composite
def rules(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 4))
    result = []
    for index in range(count):
        rule: dict[str, Any] = {
            "id": f"r{index}",
            "event": draw(st.sampled_from(EVENT_TYPES)),
            "points": draw(st.integers(0, 60)),
            "oncePerUser": draw(st.booleans()),
        }
        if draw(st.booleans()):
            rule["unit"] = {"property": "n", "size": draw(st.sampled_from(UNIT_SIZES))}
        if draw(st.booleans()):
            rule["dailyCap"] = draw(st.integers(1, 150))
        result.append(rule)
    return result


def instant(hours: int, minute: int) -> datetime:
    return START + timedelta(hours=hours, minutes=minute)


@st.composite
def boosts(draw: st.DrawFn) -> list[dict[str, Any]]:
    result = []
    for index in range(draw(st.integers(0, 3))):
        begin = draw(st.integers(0, DAYS * 24 - 1))
        length = draw(st.integers(1, 72))
        result.append(
            {
                "name": f"b{index}",
                "start": instant(begin, 0).isoformat(),
                "end": instant(begin + length, 0).isoformat(),
                "multiplier": draw(st.sampled_from(MULTIPLIERS)),
            }
        )
    return result


rewards = st.lists(
    st.fixed_dictionaries(
        {"cost": st.integers(1, 80)},
        optional={"stock": st.integers(0, 4), "perUserLimit": st.integers(1, 3)},
    ),
    max_size=3,
).map(lambda items: [{"id": f"w{i}", "name": f"Reward {i}", **item} for i, item in enumerate(items)])


@st.composite
def programs(draw: st.DrawFn, with_rewards: bool = True) -> ProgramSpec:
    spec = {
        "tenant": "t",
        "schedule": {
            "start": START.isoformat(),
            "end": (START + timedelta(days=DAYS + 1)).isoformat(),
            "timezone": draw(st.sampled_from(ZONES)),
        },
        "rules": draw(rules()),
        "boosts": draw(boosts()),
        "rewards": draw(rewards) if with_rewards else [],
    }
    return parse_program({"metadata": {"name": "prop"}, "spec": spec}).spec


unit_values = st.one_of(
    st.integers(-5, 4000),
    st.floats(-5, 4000, allow_nan=False),
    st.sampled_from([None, True, "12", 0.3, 0.7, 2.9999999999999996]),
)


@st.composite
def scoring_events(draw: st.DrawFn) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    value = draw(unit_values)
    if value is not None:
        properties["n"] = value
    return {
        "type": draw(st.sampled_from(EVENT_TYPES)),
        "user": draw(st.sampled_from(USERS)),
        "at": instant(draw(st.integers(0, DAYS * 24 - 1)), draw(st.sampled_from([0, 0, 1, 30, 59]))),
        "properties": properties,
    }


@st.composite
def redeem_events(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "reward.redeem",
        "user": draw(st.sampled_from(USERS)),
        "at": instant(draw(st.integers(0, DAYS * 24 - 1)), 0),
        "properties": {"reward": draw(st.sampled_from(["w0", "w1", "w2", "unknown"]))},
    }


def as_events(raw: list[dict[str, Any]]) -> list[ScorableEvent]:
    return [ScorableEvent(f"e{i}", r["type"], r["user"], r["at"], r["properties"]) for i, r in enumerate(raw)]


# --- running and reference arithmetic --------------------------------------------------------


@dataclass
class Run:
    outcomes: list[Outcome]
    states: dict[str, UserState]
    stock: dict[str, int | None]


def run(spec: ProgramSpec, events: list[ScorableEvent]) -> Run:
    engine = RulesEngine(spec)
    states = {user: UserState(user) for user in USERS}
    stock: dict[str, int | None] = {reward.id: reward.stock for reward in spec.rewards}
    outcomes = [engine.score(e, states[e.user], stock) for e in events]
    return Run(outcomes, states, stock)


def local_day(spec: ProgramSpec, at: datetime) -> date:
    return at.astimezone(ZoneInfo(spec.schedule.timezone)).date()


def expected_boosted(spec: ProgramSpec, rule_index: int, event: ScorableEvent) -> int:
    """DESIGN.md's formula, in exact fractions: floor(points * floor(n / size) * product of boosts)."""
    rule = spec.rules[rule_index]
    if rule.unit is None:
        base = rule.points
    else:
        value = event.properties.get(rule.unit.property)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return 0
        base = rule.points * math.floor(Fraction(str(value)) / Fraction(str(rule.unit.size)))
    product = Fraction(1)
    for boost in spec.boosts:
        if boost.start <= event.occurred_at < boost.end:
            product *= Fraction(str(boost.multiplier))
    return math.floor(base * product)


def per_day_totals(spec: ProgramSpec, result: Run) -> dict[tuple[str, str, date], int]:
    totals: dict[tuple[str, str, date], int] = defaultdict(int)
    for outcome in result.outcomes:
        for award in outcome.awards:
            totals[(outcome.user, award.rule_id, award.local_day)] += award.points
    return dict(totals)


def user_points(result: Run) -> dict[str, int]:
    return {user: state.points for user, state in result.states.items()}


# --- properties ------------------------------------------------------------------------------


@PROPERTIES
@given(spec=programs(), raw=st.lists(st.one_of(scoring_events(), redeem_events()), max_size=40))
def test_awards_positive_capped_once_and_consistent(spec: ProgramSpec, raw: list[dict[str, Any]]) -> None:
    events = as_events(raw)
    result = run(spec, events)
    rules = {rule.id: rule for rule in spec.rules}
    awards_per_user_rule: dict[tuple[str, str], int] = defaultdict(int)
    earned: dict[str, int] = defaultdict(int)
    for event, outcome in zip(events, result.outcomes, strict=True):
        assert outcome.event_id == event.id and outcome.user == event.user
        assert outcome.local_day == local_day(spec, event.occurred_at)
        for award in outcome.awards:
            assert award.points > 0
            assert award.local_day == outcome.local_day
            rule = rules[award.rule_id]
            assert rule.event == event.type
            index = spec.rules.index(rule)
            # An award is the boosted amount, or less only because of the daily cap.
            full = expected_boosted(spec, index, event)
            assert award.points == full or (rule.daily_cap is not None and award.points < full)
            awards_per_user_rule[(event.user, rule.id)] += 1
            earned[event.user] += award.points
        assert len({a.rule_id for a in outcome.awards}) == len(outcome.awards)
    for (user, rule_id, _day), total in per_day_totals(spec, result).items():
        cap = rules[rule_id].daily_cap
        assert cap is None or total <= cap, (user, rule_id, total, cap)
    for (user, rule_id), count in awards_per_user_rule.items():
        if rules[rule_id].once_per_user:
            assert count == 1, (user, rule_id)
    for user, state in result.states.items():
        assert state.points == earned[user]
        assert state.balance == state.points - state.spent >= 0


@PROPERTIES
@given(spec=programs(), raw=st.lists(st.one_of(scoring_events(), redeem_events()), max_size=50))
def test_redemptions_never_overspend_or_oversell(spec: ProgramSpec, raw: list[dict[str, Any]]) -> None:
    events = as_events(raw)
    engine = RulesEngine(spec)
    states = {user: UserState(user) for user in USERS}
    stock: dict[str, int | None] = {reward.id: reward.stock for reward in spec.rewards}
    fulfilled: dict[str, int] = defaultdict(int)
    fulfilled_per_user: dict[tuple[str, str], int] = defaultdict(int)
    spent: dict[str, int] = defaultdict(int)
    for event in events:
        state = states[event.user]
        before = (state.points, state.spent)
        outcome = engine.score(event, state, stock)
        assert state.balance == state.points - state.spent
        assert state.balance >= 0
        assert all(remaining is None or remaining >= 0 for remaining in stock.values())
        redemption = outcome.redemption
        if event.type != "reward.redeem":
            assert redemption is None
            continue
        assert redemption is not None and outcome.awards == [] and outcome.badges == []
        assert state.points == before[0]  # redeeming never changes points earned
        if redemption.status == "fulfilled":
            reward = spec.reward(redemption.reward_id)
            assert reward is not None and redemption.reason is None
            assert before[0] - before[1] >= reward.cost  # the balance covered it
            assert state.spent == before[1] + reward.cost
            fulfilled[reward.id] += 1
            fulfilled_per_user[(event.user, reward.id)] += 1
            spent[event.user] += reward.cost
        else:
            assert redemption.status == "rejected" and redemption.reason
            assert state.spent == before[1]
    for reward in spec.rewards:
        if reward.stock is not None:
            assert fulfilled[reward.id] <= reward.stock
            assert stock[reward.id] == reward.stock - fulfilled[reward.id]
        if reward.per_user_limit is not None:
            assert all(fulfilled_per_user[(u, reward.id)] <= reward.per_user_limit for u in USERS)
    for user, state in states.items():
        assert state.spent == spent[user]
        assert state.redeemed == {r: n for (u, r), n in fulfilled_per_user.items() if u == user and n}


Permuted = tuple[ProgramSpec, list[ScorableEvent], list[ScorableEvent]]


@st.composite
def program_and_permuted_events(draw: st.DrawFn) -> Permuted:
    spec = draw(programs(with_rewards=False))
    events = as_events(draw(st.lists(scoring_events(), max_size=40)))
    return spec, events, draw(st.permutations(events))


@PROPERTIES
@given(case=program_and_permuted_events())
def test_capped_day_totals_do_not_depend_on_arrival_order(
    case: Permuted,
) -> None:
    spec, events, permuted = case
    expected: dict[tuple[str, str, date], int] = defaultdict(int)
    for index, rule in enumerate(spec.rules):
        if rule.once_per_user:
            continue  # which event wins the single award depends on arrival order, by design
        for event in events:
            if event.type == rule.event:
                expected[(event.user, rule.id, local_day(spec, event.occurred_at))] += expected_boosted(
                    spec, index, event
                )
    for key, total in list(expected.items()):
        cap = next(r.daily_cap for r in spec.rules if r.id == key[1])
        expected[key] = total if cap is None else min(total, cap)
    wanted = {key: total for key, total in expected.items() if total > 0}
    once = {rule.id for rule in spec.rules if rule.once_per_user}
    for order in (events, permuted):
        totals = per_day_totals(spec, run(spec, order))
        assert {k: v for k, v in totals.items() if k[1] not in once} == wanted


def order_free(spec: ProgramSpec) -> ProgramSpec:
    """The program without the once-per-user rules whose single award could differ by event.

    A once-per-user rule gives the *first* arriving event's amount; that is order-free only
    when every matching event earns the same: no unit and no boosts.
    """
    constant = not spec.boosts
    rules = [
        rule.model_copy(update={"once_per_user": False})
        if rule.once_per_user and not (constant and rule.unit is None)
        else rule
        for rule in spec.rules
    ]
    return spec.model_copy(update={"rules": rules})


@PROPERTIES
@given(case=program_and_permuted_events())
def test_user_totals_without_redemptions_do_not_depend_on_arrival_order(
    case: Permuted,
) -> None:
    spec, events, permuted = case
    spec = order_free(spec)
    first, second = run(spec, events), run(spec, permuted)
    assert user_points(first) == user_points(second)
    # A once-per-user award lands on the day of whichever matching event arrives first.
    once = {rule.id for rule in spec.rules if rule.once_per_user}

    def by_day(result: Run) -> dict[tuple[str, str, date], int]:
        return {k: v for k, v in per_day_totals(spec, result).items() if k[1] not in once}

    assert by_day(first) == by_day(second)
    assert {u: s.badges for u, s in first.states.items()} == {u: s.badges for u, s in second.states.items()}


@PROPERTIES
@given(spec=programs(), raw=st.lists(st.one_of(scoring_events(), redeem_events()), max_size=30))
def test_scoring_is_deterministic(spec: ProgramSpec, raw: list[dict[str, Any]]) -> None:
    """Redelivery and rebuilds rely on the same inputs giving the same outcomes."""
    events = as_events(raw)
    first, second = run(spec, events), run(spec, events)
    assert first.outcomes == second.outcomes
    assert first.stock == second.stock
    assert {u: (s.points, s.spent, s.badges) for u, s in first.states.items()} == {
        u: (s.points, s.spent, s.badges) for u, s in second.states.items()
    }
