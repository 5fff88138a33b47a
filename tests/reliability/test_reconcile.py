"""Reconciliation against a real program schema (the shared MariaDB, migrations applied by the
platform's provisioning code): lost and double-counted events must be found, and time to
recover computed on the client's and the database's clocks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from reliability.client import Attempt, EventRecord, LoadClient, Outcome
from reliability.reconcile import read_ledger, reconcile, recovery
from sqlalchemy import create_engine, text

from gamify.credentials import generate_password
from gamify.naming import ProgramNames
from gamify.provisioning import mysql as schema
from tests.conftest import unique_program_id


@pytest.fixture
def database_url(mysql_admin_url: str) -> Iterator[str]:
    names = ProgramNames(unique_program_id("rel"))
    url = schema.ensure_schema(mysql_admin_url, names, generate_password())
    try:
        yield url
    finally:
        schema.drop_schema(mysql_admin_url, names)


def run(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def score(
    event_id: str, user: str, points: int, *, at: str = "UTC_TIMESTAMP(6)", rule: str = "r"
) -> list[str]:
    """The rows one scored event leaves (events row and one award)."""
    return [
        "INSERT INTO events (event_id, type, user_id, occurred_at, received_at, stream_seq, scored_at) "
        f"VALUES ('{event_id}', 't.x', '{user}', '2027-01-01', '2027-01-01', 1, {at})",
        "INSERT INTO ledger (event_id, user_id, kind, rule_id, base_points, multiplier, points, occurred_at, "
        f"local_day, created_at) VALUES ('{event_id}', '{user}', 'award', '{rule}', {points}, 1, {points}, "
        "'2027-01-01', '2027-01-01', UTC_TIMESTAMP(6))",
    ]


def user_row(user: str, points: int, spent: int = 0) -> str:
    return (
        "INSERT INTO users (user_id, points, spent, rev, published_rev, updated_at) "
        f"VALUES ('{user}', {points}, {spent}, 1, 0, UTC_TIMESTAMP(6))"
    )


def client_with(outcomes: dict[str, Outcome], sent: float) -> LoadClient:
    client = LoadClient("http://127.0.0.1:9", "key", lambda n: [], rate=1, batch=1)
    client.records = {
        i: EventRecord(outcome, first_sent=sent, answered=sent + 0.1) for i, outcome in outcomes.items()
    }
    return client


def test_a_consistent_ledger_reconciles_to_zero_lost_and_zero_double(database_url: str) -> None:
    run(database_url, *score("a", "u1", 10), *score("b", "u1", 5), *score("c", "u2", 7), user_row("u1", 15),
        user_row("u2", 7))  # fmt: skip
    client = client_with(
        {"a": Outcome.ACCEPTED, "b": Outcome.DUPLICATE, "c": Outcome.STORED, "d": Outcome.REJECTED},
        time.time(),
    )
    counts, lost = reconcile([client], read_ledger(database_url))
    assert (counts.sent, counts.accepted, counts.rejected, counts.scored) == (4, 3, 1, 3)
    assert (counts.lost, counts.double, counts.phantom, counts.unresolved) == (0, 0, 0, 0)
    assert lost == []


def test_lost_events_and_every_kind_of_double_count_are_found(database_url: str) -> None:
    run(
        database_url,
        *score("a", "u1", 10),
        # A second award of the same (event, rule): counted twice.
        "INSERT INTO ledger (event_id, user_id, kind, rule_id, base_points, multiplier, points, occurred_at, "
        "local_day, created_at) VALUES ('a', 'u1', 'award', 'r', 10, 1, 10, '2027-01-01', '2027-01-01', "
        "UTC_TIMESTAMP(6))",
        user_row("u1", 20),
        # A balance that disagrees with the ledger, and a cap counter that does.
        *score("b", "u2", 5),
        user_row("u2", 6),
        "INSERT INTO cap_counters (user_id, rule_id, local_day, points) VALUES ('u2', 'r', '2027-01-01', 9)",
        # Scored though the client never heard back.
        *score("x", "u3", 1),
        user_row("u3", 1),
    )
    client = client_with({"a": Outcome.ACCEPTED, "b": Outcome.ACCEPTED, "lost-1": Outcome.ACCEPTED,
                          "x": Outcome.UNRESOLVED}, time.time())  # fmt: skip
    ledger = read_ledger(database_url)
    assert (ledger.double_awards, ledger.balance_mismatches, ledger.cap_mismatches) == (1, 1, 1)
    counts, lost = reconcile([client], ledger)
    assert (counts.lost, counts.double, counts.phantom, counts.unresolved) == (1, 3, 1, 1)
    assert lost == ["lost-1"]


def test_time_to_recover_compares_client_answers_with_database_scoring_times(database_url: str) -> None:
    fault_end = time.time() - 10
    scored_at = datetime.fromtimestamp(fault_end + 3, UTC).strftime("'%Y-%m-%d %H:%M:%S.%f'")
    run(database_url, *score("before", "u1", 1, at=scored_at), *score("after", "u1", 1), user_row("u1", 2))
    client = client_with({"before": Outcome.ACCEPTED, "after": Outcome.ACCEPTED}, fault_end - 1)
    client.records["after"].first_sent = fault_end + 1
    client.attempts = [
        Attempt(0, fault_end - 1, fault_end - 0.9, 202, accepted=1),
        Attempt(1, fault_end + 0.5, fault_end + 1.5, 503, retry_after="5"),
        Attempt(1, fault_end + 2, fault_end + 2.25, 202, accepted=1),
    ]
    timing = recovery(fault_end, [client], read_ledger(database_url))
    assert timing.first_accepted == pytest.approx(2.25, abs=0.01)
    assert timing.first_scored == pytest.approx(3, abs=0.01)
    assert timing.all_scored == pytest.approx(3, abs=0.01)  # "after" was sent after the fault ended
