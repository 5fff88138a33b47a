"""Score one batch of stream events into the program's schema, in ONE transaction.

Correctness with several workers on the same durable rests on row locks, never on worker
memory: every user of the batch is locked first (exclusive row locks, taken in user-id order so
that all workers lock in the same order), then every reward being redeemed (in reward-id
order). Each user's state (points, cap counters, rule counts, badges, redemptions) is read only
once its lock is held, so daily caps and stock stay exact with any number of workers.

Events whose id is already in `events` are duplicates (a redelivery, or a re-send after the
stream's dedupe window) and are not scored again. Writes are multi-row statements: this is the
hot path of the platform.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

import orjson
from pydantic import ValidationError
from pymysql.constants import SERVER_STATUS
from pymysql.converters import escape_string
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from gamify.db import tables as t
from gamify.events import EventRecord, StreamEvent
from gamify.privacy.identity import erased_among
from gamify.program import REDEEM_EVENT, ProgramSpec, describe_errors
from gamify.rules.engine import Outcome, RulesEngine, ScorableEvent, UserState
from gamify.windows import award_keys

# A validated event: the model itself, or its fields as a lane process receives them.
AnyEvent = StreamEvent | EventRecord

ISOLATION = "READ COMMITTED"
# Deadlocks should not happen (consistent lock order) but InnoDB may still pick a victim, e.g.
# on index gaps; a lock wait timeout means another transaction held a user for very long.
LOCK_RETRIES = 5
DEADLOCK = 1213
LOCK_WAIT_TIMEOUT = 1205
# Errors about the database, never about the events: the worker waits for the database to come
# back instead of blaming (and eventually dead-lettering) the messages.
_ENVIRONMENT_ERRORS = {
    1040,  # too many connections
    1044,  # access denied to database
    1045,  # access denied for user
    1049,  # unknown database
    1053,  # server shutdown in progress
    1142,  # command denied (grants)
    1146,  # table does not exist (migrations not applied yet)
    1927,  # connection killed
    2002,  # cannot connect through socket
    2003,  # cannot connect
    2006,  # server has gone away
    2013,  # lost connection during query
    2014,  # commands out of sync (a connection broken mid-statement)
    2055,  # lost connection (SSL / reading)
    DEADLOCK,
    LOCK_WAIT_TIMEOUT,
}
REASON_LENGTH = 200  # redemptions.reason
MAX_MULTIPLIER = Decimal("99999999.9999")  # ledger.multiplier is NUMERIC(12, 4)
FOUR_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class BatchResult:
    """What one committed batch did. `outcomes` are in stream order, duplicates excluded."""

    scored: int
    duplicates: list[str]
    outcomes: list[Outcome]
    points: int
    attempts: int = 1
    erased: list[str] = field(default_factory=list)  # ids of events of erased users, not scored


class _Literals:
    """SQL literals for one batch's statements, on one connection.

    A user id, rule id, day or window key recurs in many rows of a batch (events, ledger, caps,
    counts, boards): `recurring` renders each once. Rendering values one by one through the
    driver cost more than scoring itself on this path (see `_literal_renderer`).
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.render = _literal_renderer(connection)
        self._seen: dict[Any, str] = {}

    def recurring(self, value: Any) -> str:
        rendered = self._seen.get(value)
        if rendered is None:
            rendered = self._seen[value] = self.render(value)
        return rendered

    def row(self, values: Iterable[Any]) -> str:
        """`(v1, v2, ...)` of values that recur (ids, days, keys) or are plain numbers."""
        return "(" + ", ".join(map(self.recurring, values)) + ")"


@dataclass
class _Writes:
    """Rows the batch inserts or upserts, collected while scoring (events, ledger, badges and
    redemptions already rendered as SQL row literals)."""

    literals: _Literals
    capped_rules: set[str]
    events: list[str] = field(default_factory=list)
    ledger: list[str] = field(default_factory=list)
    badges: list[str] = field(default_factory=list)
    redemptions: list[str] = field(default_factory=list)
    touched_users: set[str] = field(default_factory=set)
    # What the batch adds to each counter (added in the database: a counter the batch did not
    # need to read is still right).
    cap_points: dict[tuple[str, str, date], int] = field(default_factory=lambda: defaultdict(int))
    rule_awards: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    redeemed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    boards: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))


def create_scoring_engine(database_url: str) -> Engine:
    """The worker's engine: pings before use (the database may have restarted), READ COMMITTED
    (locking reads see what other workers committed), and timeouts so a dead server surfaces
    as an error instead of a hang."""
    return create_engine(
        database_url,
        pool_pre_ping=True,
        pool_recycle=3600,
        isolation_level=ISOLATION,
        connect_args={"connect_timeout": 5, "read_timeout": 120, "write_timeout": 120},
    )


def error_code(exc: BaseException) -> int | None:
    if isinstance(exc, DBAPIError) and exc.orig is not None and exc.orig.args:
        code = exc.orig.args[0]
        return code if isinstance(code, int) else None
    return None


def describe_error(exc: BaseException) -> str:
    """What went wrong, for logs and dead-letter headers: a validation error's fields, or the
    driver's error (code and text) without SQLAlchemy's statement and its values."""
    if isinstance(exc, ValidationError):
        return describe_errors(exc)
    orig = getattr(exc, "orig", None)
    if orig is not None and getattr(orig, "args", None):
        return f"{type(orig).__name__}{orig.args}"
    return f"{type(exc).__name__}: {exc}"


def is_transient(exc: BaseException) -> bool:
    """True when `exc` is about the database (down, restarting, unreachable, locked), not about
    the events: the batch should be retried as it is once the database is back."""
    if isinstance(exc, DisconnectionError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return True
        code = error_code(exc)
        return code in _ENVIRONMENT_ERRORS or (isinstance(exc, OperationalError) and code is None)
    return False


def _naive_utc(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(tzinfo=None)


def sync_reward_stock(engine: Engine, spec: ProgramSpec) -> None:
    """Make `reward_stock` hold one row per reward of the spec, with the spec's stock.

    `stock` is the total number of units ever available and `redeemed` counts fulfilled
    redemptions, so remaining = stock - redeemed: an edited stock in the spec takes effect as
    is (raising it adds units; lowering it below `redeemed` leaves none). Rows of rewards no
    longer in the spec are kept (their history stays readable).
    """
    if not spec.rewards:
        return
    rows = [(reward.id, reward.stock) for reward in sorted(spec.rewards, key=lambda r: r.id)]
    with engine.begin() as connection:
        _insert(
            _Literals(connection),
            t.reward_stock.name,
            ("reward_id", "stock", "redeemed"),
            rows,
            values="(%s, %s, 0)",
            on_duplicate="stock = VALUES(stock)",
        )


def score_batch(engine: Engine, rules: RulesEngine, events: Sequence[tuple[AnyEvent, int]]) -> BatchResult:
    """Score `events` ((event, stream sequence) pairs) and commit, all or nothing.

    Retries the whole transaction (bounded) when InnoDB reports a deadlock or a lock wait
    timeout; any other error propagates with nothing written.
    """
    if not events:
        return BatchResult(scored=0, duplicates=[], outcomes=[], points=0)
    ordered = sorted(events, key=lambda item: item[1])  # stream order
    for attempt in range(1, LOCK_RETRIES + 1):
        try:
            with engine.connect() as connection:
                connection = connection.execution_options(isolation_level=ISOLATION)
                with connection.begin():
                    result = _score_locked(connection, rules, ordered)
            return BatchResult(
                result.scored, result.duplicates, result.outcomes, result.points, attempt, result.erased
            )
        except OperationalError as exc:
            if error_code(exc) not in (DEADLOCK, LOCK_WAIT_TIMEOUT) or attempt == LOCK_RETRIES:
                raise
            time.sleep(random.uniform(0.01, 0.05) * attempt)
    raise AssertionError("unreachable")


def _redeemed_rewards(spec: ProgramSpec, events: Sequence[tuple[AnyEvent, int]]) -> list[str]:
    """Ids of the spec's rewards that `events` try to redeem, sorted (the lock order)."""
    return sorted(
        {
            reward_id
            for event, _ in events
            if event.type == REDEEM_EVENT
            and isinstance(reward_id := event.properties.get("reward"), str)
            and spec.reward(reward_id) is not None
        }
    )


def _spec_stock(spec: ProgramSpec, reward_id: str) -> int | None:
    reward = spec.reward(reward_id)
    return reward.stock if reward is not None else None


def _score_locked(
    connection: Connection, rules: RulesEngine, events: Sequence[tuple[AnyEvent, int]]
) -> BatchResult:
    spec = rules.spec
    user_ids = sorted({event.user for event, _ in events})
    literals = _Literals(connection)

    # 1. Lock the users, in id order: the same order in every worker.
    users_sql = f"SELECT user_id, points, spent FROM {t.users.name} WHERE user_id IN "
    states = {
        user: UserState(user, points=points, spent=spent)
        for user, points, spent in _query(
            literals, users_sql + _marks(len(user_ids)) + " ORDER BY user_id FOR UPDATE", user_ids
        )
    }
    new_users = [user for user in user_ids if user not in states]
    if new_users:
        # INSERT ... ON DUPLICATE KEY UPDATE locks a row another worker created meanwhile
        # exclusively at once (INSERT IGNORE would take a shared lock: two transactions
        # upgrading shared locks deadlock). Then read them: a user may not be new after all.
        _insert(
            literals,
            t.users.name,
            ("user_id", "points", "spent", "rev", "published_rev", "updated_at"),
            [(user,) for user in new_users],
            values=f"(%s, 0, 0, 0, 0, {NOW})",
            on_duplicate="user_id = user_id",
        )
        for user, points, spent in _query(literals, users_sql + _marks(len(new_users)), new_users):
            states[user] = UserState(user, points=points, spent=spent)

    # 1b. Users erased from the program (gamify.privacy) are never scored again. Checked with
    # their locks held, so an erasure that committed while this batch waited is seen; a row
    # created above for one of them is removed again.
    erased_users = erased_among(connection, user_ids)
    erased = [event.id for event, _ in events if event.user in erased_users]
    if erased_users:
        events = [(event, seq) for event, seq in events if event.user not in erased_users]
        removed = ", ".join(map(literals.recurring, sorted(erased_users)))
        _execute(connection, f"DELETE FROM {t.users.name} WHERE user_id IN ({removed})")

    # 2. Duplicates. Read once the user locks are held: in READ COMMITTED every statement sees
    # what was committed before it started, so whatever another worker scored for these users
    # is seen. (A plain read on purpose: a locking one could wait on other workers' uncommitted
    # rows. An id reused by another user in a concurrent batch still cannot be scored twice:
    # the unique key fails that insert, and the worker retries the events one by one.)
    # Within the batch, the first occurrence wins.
    event_ids = list(dict.fromkeys(event.id for event, _ in events))
    if not event_ids:
        return BatchResult(scored=0, duplicates=[], outcomes=[], points=0, erased=erased)
    seen = {
        event_id
        for (event_id,) in _query(
            literals,
            f"SELECT event_id FROM {t.events.name} WHERE event_id IN {_marks(len(event_ids))}",
            event_ids,
        )
    }
    fresh: list[tuple[AnyEvent, int]] = []
    duplicates: list[str] = []
    for event, seq in events:
        if event.id in seen:
            duplicates.append(event.id)
        else:
            seen.add(event.id)
            fresh.append((event, seq))
    if not fresh:
        return BatchResult(scored=0, duplicates=duplicates, outcomes=[], points=0, erased=erased)

    # 3. Everything else the engine needs, a few queries for the whole batch.
    _load_state(literals, rules, fresh, states)
    stock = _lock_stock(literals, spec, fresh)

    # 4. Score in stream order, then write.
    writes = _Writes(literals, capped_rules={rule.id for rule in spec.rules if rule.daily_cap is not None})
    outcomes = []
    for event, seq in fresh:
        outcome = rules.score(_scorable(event), states[event.user], stock)
        outcomes.append(outcome)
        _collect(rules, event, seq, outcome, writes)
    _write(connection, states, writes)
    return BatchResult(
        scored=len(fresh),
        duplicates=duplicates,
        outcomes=outcomes,
        points=sum(outcome.points for outcome in outcomes),
        erased=erased,
    )


def _marks(count: int, width: int = 1) -> str:
    """`(%s, %s, ...)` for an IN list of `count` values (of `width`-tuples when width > 1)."""
    item = "%s" if width == 1 else "(" + ", ".join(["%s"] * width) + ")"
    return "(" + ", ".join([item] * count) + ")"


def _query(literals: _Literals, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of a driver-level query whose `%s` marks are filled with `params` as SQL literals."""
    return [tuple(row) for row in _execute(literals.connection, sql % tuple(map(literals.recurring, params)))]


def _execute(connection: Connection, sql: str) -> CursorResult[Any]:
    """Run a statement whose values are already SQL literals: `no_parameters` makes the driver
    send it as it is (a `%` inside a value is data, not a format mark)."""
    return connection.exec_driver_sql(sql, execution_options={"no_parameters": True})


def _literal_renderer(connection: Connection) -> Callable[[Any], str]:
    """A function that renders one parameter as an SQL literal, for this connection.

    On this path, rendering dozens of parameters per event through the driver's generic
    `escape` (four calls and an encoder lookup per value) and SQLAlchemy's per-statement
    compilation cost more than the scoring itself. Strings still go through PyMySQL's own
    escaping (or quote doubling when the server runs with NO_BACKSLASH_ESCAPES); the few
    types written here are rendered directly and anything else falls back to the driver.
    """
    dbapi_connection = cast(Any, connection.connection.dbapi_connection)
    backslashes = not dbapi_connection.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES

    def literal(value: Any) -> str:
        kind = type(value)
        if kind is str:
            return "'" + (escape_string(value) if backslashes else value.replace("'", "''")) + "'"
        if kind is int:
            return str(value)
        if value is None:
            return "NULL"
        if kind is Decimal:
            return format(value, "f")
        return str(dbapi_connection.escape(value))

    return literal


def _scorable(event: AnyEvent) -> ScorableEvent:
    return ScorableEvent(event.id, event.type, event.user, event.occurred_at, event.properties)


def _load_state(
    literals: _Literals,
    rules: RulesEngine,
    fresh: Sequence[tuple[AnyEvent, int]],
    states: dict[str, UserState],
) -> None:
    spec = rules.spec
    scored_users = sorted({event.user for event, _ in fresh if event.type != REDEEM_EVENT})

    # Cap counters, only for the (user, rule, day) triples this batch can touch.
    cap_keys = {
        (event.user, rule.id, rules.local_day(event.occurred_at))
        for event, _ in fresh
        for rule in spec.rules_for(event.type)
        if rule.daily_cap is not None
    }
    if cap_keys:
        caps = _query(
            literals,
            f"SELECT user_id, rule_id, local_day, points FROM {t.cap_counters.name} "
            f"WHERE (user_id, rule_id, local_day) IN {_marks(len(cap_keys), width=3)}",
            [value for key in cap_keys for value in key],
        )
        for user, rule_id, day, points in caps:
            states[user].day_points[(rule_id, day)] = points

    # Award counts matter only to once-per-user rules and to rule badges.
    counted_rules = sorted(
        {rule.id for event, _ in fresh for rule in spec.rules_for(event.type) if rule.once_per_user}
        | {badge.rule for badge in spec.badges if badge.rule is not None}
    )
    if scored_users and counted_rules:
        counts = _query(
            literals,
            f"SELECT user_id, rule_id, awards FROM {t.rule_counts.name} "
            f"WHERE user_id IN {_marks(len(scored_users))} AND rule_id IN {_marks(len(counted_rules))}",
            [*scored_users, *counted_rules],
        )
        for user, rule_id, awards in counts:
            states[user].rule_awards[rule_id] = awards
    if scored_users and spec.badges:
        badges = _query(
            literals,
            f"SELECT user_id, badge_id FROM {t.badges.name} WHERE user_id IN {_marks(len(scored_users))}",
            scored_users,
        )
        for user, badge_id in badges:
            states[user].badges.add(badge_id)

    redeemers = sorted({event.user for event, _ in fresh if event.type == REDEEM_EVENT})
    if redeemers and any(reward.per_user_limit is not None for reward in spec.rewards):
        fulfilled = _query(
            literals,
            f"SELECT user_id, reward_id, COUNT(*) FROM {t.redemptions.name} "
            f"WHERE user_id IN {_marks(len(redeemers))} AND status = 'fulfilled' GROUP BY user_id, reward_id",
            redeemers,
        )
        for user, reward_id, count in fulfilled:
            states[user].redeemed[reward_id] = count


def _lock_stock(
    literals: _Literals, spec: ProgramSpec, fresh: Sequence[tuple[AnyEvent, int]]
) -> dict[str, int | None]:
    """Lock the stock rows of the rewards being redeemed (after the users, in id order; a
    missing row is created with the spec's stock) and return what remains of each (None:
    unlimited)."""
    reward_ids = _redeemed_rewards(spec, fresh)
    if not reward_ids:
        return {}
    _insert(
        literals,
        t.reward_stock.name,
        ("reward_id", "stock", "redeemed"),
        [(reward_id, _spec_stock(spec, reward_id)) for reward_id in reward_ids],
        values="(%s, %s, 0)",
        on_duplicate="reward_id = reward_id",
    )
    rows = _query(
        literals,
        f"SELECT reward_id, stock, redeemed FROM {t.reward_stock.name} "
        f"WHERE reward_id IN {_marks(len(reward_ids))}",
        reward_ids,
    )
    return {
        reward_id: None if stock is None else max(stock - redeemed, 0) for reward_id, stock, redeemed in rows
    }


def _sql_time(instant: datetime) -> str:
    """UTC as DATETIME text: the driver escapes a string much faster than it formats a datetime."""
    return _naive_utc(instant).isoformat(" ")


def _collect(rules: RulesEngine, event: AnyEvent, seq: int, outcome: Outcome, writes: _Writes) -> None:
    """Add the event's rows to `writes`: the event, its ledger entries, badges and redemption as
    rendered rows; its points to the per-user, per-cap and per-board sums."""
    literals = writes.literals
    render, recurring = literals.render, literals.recurring
    event_id = recurring(event.id)  # rendered already for the duplicates query
    user = event.user
    user_sql = recurring(user)
    occurred = "'" + _sql_time(event.occurred_at) + "'"  # digits and separators: nothing to escape
    properties = render(orjson.dumps(event.properties).decode())
    writes.events.append(
        f"({event_id}, {recurring(event.type)}, {user_sql}, {occurred}, '{_sql_time(event.received_at)}', "
        f"{render(event.source)}, {properties}, {seq}, {NOW})"
    )
    if outcome.awards:
        writes.touched_users.add(user)
        keys = award_keys(event.occurred_at, rules.zone)
        for award in outcome.awards:
            multiplier = format(_storable_multiplier(award.multiplier), "f")
            writes.ledger.append(
                f"({event_id}, {user_sql}, 'award', {recurring(award.rule_id)}, NULL, {award.base_points}, "
                f"{multiplier}, {award.points}, {occurred}, '{award.local_day.isoformat()}', {NOW})"
            )
            writes.rule_awards[(user, award.rule_id)] += 1
            if award.rule_id in writes.capped_rules:
                writes.cap_points[(user, award.rule_id, award.local_day)] += award.points
            for key in keys:
                writes.boards[(key, user)] += award.points
    for badge_id in outcome.badges:
        writes.touched_users.add(user)
        writes.badges.append(f"({user_sql}, {recurring(badge_id)}, {event_id}, {NOW})")
    redemption = outcome.redemption
    if redemption is not None:
        writes.touched_users.add(user)
        reason = redemption.reason[:REASON_LENGTH] if redemption.reason else None
        reward_id = redemption.reward_id[: t.NAME]  # an unknown id is recorded (rejected), cut to fit
        writes.redemptions.append(
            f"({event_id}, {user_sql}, {render(reward_id)}, {render(redemption.status)}, {render(reason)}, "
            f"{redemption.cost}, {occurred}, {NOW})"
        )
        if redemption.status == "fulfilled":
            writes.redeemed[redemption.reward_id] += 1
            spend = -redemption.cost
            writes.ledger.append(
                f"({event_id}, {user_sql}, 'spend', NULL, {render(redemption.reward_id)}, {spend}, 1, "
                f"{spend}, {occurred}, '{outcome.local_day.isoformat()}', {NOW})"
            )


def _storable_multiplier(multiplier: Decimal) -> Decimal:
    return min(multiplier, MAX_MULTIPLIER).quantize(FOUR_PLACES)


ROWS_PER_STATEMENT = 1000
# Row timestamps come from the server's UTC clock: one less value per row to send and escape.
NOW = "UTC_TIMESTAMP(6)"


def _insert(
    literals: _Literals,
    table: str,
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
    *,
    values: str | None = None,
    on_duplicate: str = "",
) -> None:
    """Multi-row `INSERT ... VALUES (...), (...)` of `rows` (tuples of values).

    `values` is the SQL of one row (default: one `%s` per column); constants written into it
    are not sent per row. Built here rather than left to the driver's executemany, which falls
    back to one statement per row when `ON DUPLICATE KEY UPDATE` uses VALUES().
    """
    row_sql = values or "(" + ", ".join(["%s"] * len(columns)) + ")"
    rendered = [row_sql % tuple(map(literals.recurring, row)) for row in rows]
    _insert_rendered(literals.connection, table, columns, rendered, on_duplicate=on_duplicate)


def _insert_rendered(
    connection: Connection, table: str, columns: Sequence[str], rows: Sequence[str], *, on_duplicate: str = ""
) -> None:
    """Multi-row INSERT of rows already rendered as SQL (`(v1, v2, ...)`): one round trip per
    ROWS_PER_STATEMENT rows, sent without parameters so the driver does not format it again."""
    if not rows:
        return
    tail = f" ON DUPLICATE KEY UPDATE {on_duplicate}" if on_duplicate else ""
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        _execute(connection, head + ", ".join(rows[start : start + ROWS_PER_STATEMENT]) + tail)


def _write(connection: Connection, states: dict[str, UserState], writes: _Writes) -> None:
    row, recurring = writes.literals.row, writes.literals.recurring
    _insert_rendered(
        connection,
        t.events.name,
        ("event_id", "type", "user_id", "occurred_at", "received_at", "source", "properties",
         "stream_seq", "scored_at"),
        writes.events,
    )  # fmt: skip
    _insert_rendered(
        connection,
        t.ledger.name,
        ("event_id", "user_id", "kind", "rule_id", "reward_id", "base_points", "multiplier", "points",
         "occurred_at", "local_day", "created_at"),
        writes.ledger,
    )  # fmt: skip
    # Row order does not matter from here on: every row written belongs to a user locked above.
    # The rows exist and are locked: this upsert is a multi-row UPDATE that also bumps `rev`.
    _insert_rendered(
        connection,
        t.users.name,
        ("user_id", "points", "spent", "rev", "published_rev", "updated_at"),
        [
            f"({recurring(user)}, {states[user].points}, {states[user].spent}, 1, 0, {NOW})"
            for user in writes.touched_users
        ],
        on_duplicate="points = VALUES(points), spent = VALUES(spent), rev = rev + 1, "
        "updated_at = VALUES(updated_at)",
    )
    _insert_rendered(
        connection,
        t.cap_counters.name,
        ("user_id", "rule_id", "local_day", "points"),
        [row((user, rule_id, day, points)) for (user, rule_id, day), points in writes.cap_points.items()],
        on_duplicate="points = points + VALUES(points)",
    )
    _insert_rendered(
        connection,
        t.rule_counts.name,
        ("user_id", "rule_id", "awards"),
        [row((user, rule_id, awards)) for (user, rule_id), awards in writes.rule_awards.items()],
        on_duplicate="awards = awards + VALUES(awards)",
    )
    _insert_rendered(
        connection, t.badges.name, ("user_id", "badge_id", "event_id", "awarded_at"), writes.badges
    )
    _insert_rendered(
        connection,
        t.redemptions.name,
        ("event_id", "user_id", "reward_id", "status", "reason", "cost", "occurred_at", "created_at"),
        writes.redemptions,
    )
    for reward_id, count in sorted(writes.redeemed.items()):
        _execute(
            connection,
            f"UPDATE {t.reward_stock.name} SET redeemed = redeemed + {count} "
            f"WHERE reward_id = {writes.literals.render(reward_id)}",
        )
    # Only points earned count on boards: spends never lower a ranking.
    _insert_rendered(
        connection,
        t.board_points.name,
        ("window_key", "user_id", "points"),
        [row((key, user, points)) for (key, user), points in writes.boards.items()],
        on_duplicate="points = points + VALUES(points)",
    )


__all__ = [
    "BatchResult",
    "create_scoring_engine",
    "describe_error",
    "error_code",
    "is_transient",
    "score_batch",
    "sync_reward_stock",
]
