"""The rules engine: DESIGN.md's scoring semantics as pure functions (no I/O).

The scorer loads a user's state from the database (under a row lock), calls `RulesEngine.score`
for each of the user's events in stream order, and writes back what the returned `Outcome`
says. Everything here is deterministic in (spec, event, state): the same inputs always give
the same awards, which is what makes redelivery and rebuilds safe.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal

from gamify.program import REDEEM_EVENT, Condition, ConditionOp, Mode, ProgramSpec, Rule

ONE = Decimal(1)
# No single award exceeds this: a unit property near the ingest bound (1e15) times a large
# `points` must never overflow the ledger (BIGINT) and turn a valid event into a dead letter.
MAX_AWARD = 10**12


@dataclass(frozen=True)
class ScorableEvent:
    id: str
    type: str
    user: str
    occurred_at: datetime  # timezone-aware
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class UserState:
    """What the engine needs to know about one user; mutated as events are scored."""

    user: str
    points: int = 0  # everything earned
    spent: int = 0
    day_points: dict[tuple[str, date], int] = field(default_factory=lambda: defaultdict(int))
    rule_awards: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    badges: set[str] = field(default_factory=set)
    redeemed: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # fulfilled

    @property
    def balance(self) -> int:
        return self.points - self.spent


@dataclass(frozen=True)
class Award:
    rule_id: str
    base_points: int  # before boosts and caps
    multiplier: Decimal
    points: int  # what the user gets (> 0)
    local_day: date


@dataclass(frozen=True)
class Redemption:
    reward_id: str
    status: Literal["fulfilled", "rejected"]
    reason: str | None
    cost: int


@dataclass(frozen=True)
class Outcome:
    event_id: str
    user: str
    local_day: date
    awards: list[Award] = field(default_factory=list)
    badges: list[str] = field(default_factory=list)
    redemption: Redemption | None = None

    @property
    def points(self) -> int:
        return sum(award.points for award in self.awards)


def _number(value: Any) -> Decimal | None:
    """A finite JSON number as Decimal (exact: 0.1 stays 0.1), else None. Booleans are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return Decimal(str(value))


def _same_json(left: Any, right: Any) -> bool:
    """JSON equality: `true` is not `1` (Python's `True == 1` would say it is); 1 and 1.0 are equal."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same_json, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same_json(left[k], right[k]) for k in left)
    return bool(left == right)


def condition_holds(condition: Condition, properties: dict[str, Any]) -> bool:
    present = condition.property in properties
    value = properties.get(condition.property)
    op = condition.op
    if op == ConditionOp.exists:
        return present if condition.value is None else present == bool(condition.value)
    if not present:
        return False
    if op == ConditionOp.eq:
        return _same_json(value, condition.value)
    if op == ConditionOp.ne:
        return not _same_json(value, condition.value)
    if op == ConditionOp.in_:
        return any(_same_json(value, option) for option in condition.value)
    left, right = _number(value), _number(condition.value)
    if left is None or right is None:
        return False
    return {
        ConditionOp.gt: left > right,
        ConditionOp.gte: left >= right,
        ConditionOp.lt: left < right,
        ConditionOp.lte: left <= right,
    }[op]


def base_points(rule: Rule, properties: dict[str, Any]) -> int:
    """`points`, or `points * floor(property / size)` for unit rules; never negative."""
    if not all(condition_holds(c, properties) for c in rule.conditions):
        return 0
    if rule.unit is None:
        return rule.points
    amount = _number(properties.get(rule.unit.property))
    if amount is None or amount <= 0:
        return 0
    units = (amount / Decimal(str(rule.unit.size))).to_integral_value(rounding=ROUND_FLOOR)
    return min(rule.points * int(units), MAX_AWARD)


def multiplier_at(spec: ProgramSpec, instant: datetime) -> Decimal:
    """All boosts active at `instant` ([start, end)) multiplied together."""
    product = ONE
    for boost in spec.boosts:
        if boost.start <= instant < boost.end:
            product *= boost.multiplier
    return product


def boosted(points: int, multiplier: Decimal) -> int:
    return min(int((Decimal(points) * multiplier).to_integral_value(rounding=ROUND_FLOOR)), MAX_AWARD)


class RulesEngine:
    def __init__(self, spec: ProgramSpec):
        self.spec = spec
        self.zone = spec.schedule.zone

    def local_day(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def score(self, event: ScorableEvent, state: UserState, stock: dict[str, int | None]) -> Outcome:
        """Score one event for `state.user`; updates `state` and `stock` in place.

        `stock` maps reward id to remaining units (None: unlimited); only redemptions use it.
        """
        day = self.local_day(event.occurred_at)
        if event.type == REDEEM_EVENT:
            redemption = self._redeem(event, state, stock)
            return Outcome(event.id, event.user, day, redemption=redemption)
        awards = [
            award
            for rule in self.spec.rules_for(event.type)
            if (award := self._award(rule, event, state, day)) is not None
        ]
        return Outcome(event.id, event.user, day, awards=awards, badges=self._new_badges(state))

    def _award(self, rule: Rule, event: ScorableEvent, state: UserState, day: date) -> Award | None:
        # .get: the scorer may load these maps from the database as plain dicts.
        if rule.once_per_user and state.rule_awards.get(rule.id, 0) > 0:
            return None
        base = base_points(rule, event.properties)
        if base <= 0:
            return None
        multiplier = multiplier_at(self.spec, event.occurred_at)
        points = boosted(base, multiplier)
        if rule.daily_cap is not None:
            points = min(points, rule.daily_cap - state.day_points.get((rule.id, day), 0))
        if points <= 0:
            return None
        state.points += points
        state.day_points[(rule.id, day)] = state.day_points.get((rule.id, day), 0) + points
        state.rule_awards[rule.id] = state.rule_awards.get(rule.id, 0) + 1
        return Award(rule.id, base, multiplier, points, day)

    def _new_badges(self, state: UserState) -> list[str]:
        earned = []
        for badge in self.spec.badges:
            if badge.id in state.badges:
                continue
            if badge.min_points is not None:
                reached = state.points >= badge.min_points
            else:
                assert badge.rule is not None and badge.min_count is not None
                reached = state.rule_awards.get(badge.rule, 0) >= badge.min_count
            if reached:
                state.badges.add(badge.id)
                earned.append(badge.id)
        return earned

    def _redeem(self, event: ScorableEvent, state: UserState, stock: dict[str, int | None]) -> Redemption:
        reward_id = event.properties.get("reward")
        if not isinstance(reward_id, str):
            return Redemption(str(reward_id), "rejected", "properties.reward must be a reward id", 0)
        if self.spec.mode == Mode.ranking:
            return Redemption(reward_id, "rejected", "this program has no rewards", 0)
        reward = self.spec.reward(reward_id)
        if reward is None:
            return Redemption(reward_id, "rejected", f"unknown reward {reward_id!r}", 0)

        def rejected(reason: str) -> Redemption:
            return Redemption(reward_id, "rejected", reason, reward.cost)

        if reward.per_user_limit is not None and state.redeemed.get(reward_id, 0) >= reward.per_user_limit:
            return rejected(f"per-user limit of {reward.per_user_limit} reached")
        remaining = stock.get(reward_id, reward.stock)
        if remaining is not None and remaining <= 0:
            return rejected("out of stock")
        if state.balance < reward.cost:
            return rejected(f"insufficient balance: {state.balance} < {reward.cost}")
        state.spent += reward.cost
        state.redeemed[reward_id] = state.redeemed.get(reward_id, 0) + 1
        if remaining is not None:
            stock[reward_id] = remaining - 1
        return Redemption(reward_id, "fulfilled", None, reward.cost)
