"""Reconciliation: the client's own record of what was accepted against the program's ledger.

- lost: the client holds it as stored (accepted or duplicate) but it is not in `events`;
- double-counted: an (event, rule) awarded twice, an event spent twice, a user whose points or
  spent differ from the ledger sums, or a daily cap counter that differs from the ledger;
- time to recover, per fault, from the moment the fault ended: to the first stored answer, to
  the first event scored, and until every event sent before it ended was scored.

`scored_at` is written by the database (UTC_TIMESTAMP) and the client's times are wall clock
on the same machine, so the two time lines compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import create_engine, text

from reliability.client import LoadClient


@dataclass(frozen=True)
class LedgerState:
    """What the program's schema says, read after the scenario drained."""

    scored_at: dict[str, float]  # event id -> when it was scored (epoch seconds)
    event_rows: int
    double_awards: int
    double_spends: int
    balance_mismatches: int
    cap_mismatches: int

    @property
    def double(self) -> int:
        duplicated_rows = self.event_rows - len(self.scored_at)
        return (
            duplicated_rows
            + self.double_awards
            + self.double_spends
            + self.balance_mismatches
            + self.cap_mismatches
        )


_DOUBLE_AWARDS = """
SELECT COUNT(*) FROM (
  SELECT event_id, rule_id FROM ledger WHERE kind = 'award'
  GROUP BY event_id, rule_id HAVING COUNT(*) > 1) AS doubled"""
_DOUBLE_SPENDS = """
SELECT COUNT(*) FROM (
  SELECT event_id FROM ledger WHERE kind = 'spend' GROUP BY event_id HAVING COUNT(*) > 1) AS doubled"""
# Users whose totals differ from their ledger (users without ledger rows must be all zero).
_BALANCES = """
SELECT COUNT(*) FROM users u LEFT JOIN (
  SELECT user_id,
         SUM(CASE WHEN kind = 'award' THEN points ELSE 0 END) AS earned,
         -SUM(CASE WHEN kind = 'spend' THEN points ELSE 0 END) AS spent
  FROM ledger GROUP BY user_id) l ON l.user_id = u.user_id
WHERE u.points <> COALESCE(l.earned, 0) OR u.spent <> COALESCE(l.spent, 0)"""
_CAPS = """
SELECT COUNT(*) FROM cap_counters c LEFT JOIN (
  SELECT user_id, rule_id, local_day, SUM(points) AS points FROM ledger WHERE kind = 'award'
  GROUP BY user_id, rule_id, local_day) l
  ON l.user_id = c.user_id AND l.rule_id = c.rule_id AND l.local_day = c.local_day
WHERE c.points <> COALESCE(l.points, 0)"""


def _epoch(naive_utc: datetime) -> float:
    return naive_utc.replace(tzinfo=UTC).timestamp()


def read_ledger(database_url: str) -> LedgerState:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT event_id, scored_at FROM events")).all()
            scored_at = {event_id: _epoch(when) for event_id, when in rows}

            def count(sql: str) -> int:
                return int(connection.execute(text(sql)).scalar_one())

            return LedgerState(
                scored_at=scored_at,
                event_rows=len(rows),
                double_awards=count(_DOUBLE_AWARDS),
                double_spends=count(_DOUBLE_SPENDS),
                balance_mismatches=count(_BALANCES),
                cap_mismatches=count(_CAPS),
            )
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Counts:
    """The figures of one scenario (the columns of its report table)."""

    sent: int
    accepted: int  # per the client's record: accepted or duplicate
    rejected: int
    unresolved: int  # no final answer (or a non-retryable error answer)
    scored: int
    lost: int
    double: int
    phantom: int  # scored though the client never got a stored answer (harmless, reported)


def reconcile(clients: list[LoadClient], ledger: LedgerState) -> tuple[Counts, list[str]]:
    """The counts, and up to 20 lost event ids (to start an investigation from)."""
    sent: set[str] = set()
    stored: set[str] = set()
    rejected = unresolved = 0
    for client in clients:
        summary = client.summary()
        sent |= client.records.keys()
        stored |= client.stored_ids()
        rejected += summary.rejected
        unresolved += summary.unresolved + summary.failed
    scored = ledger.scored_at.keys()
    lost = sorted(stored - scored)
    counts = Counts(
        sent=len(sent),
        accepted=len(stored),
        rejected=rejected,
        unresolved=unresolved,
        scored=len(scored),
        lost=len(lost),
        double=ledger.double,
        phantom=len(scored - stored),
    )
    return counts, lost[:20]


@dataclass(frozen=True)
class Recovery:
    """Seconds from the end of one fault; None when it never happened in the run."""

    first_accepted: float | None
    first_scored: float | None
    all_scored: float | None


def recovery(fault_end: float, clients: list[LoadClient], ledger: LedgerState) -> Recovery:
    answers = [
        attempt.answered
        for client in clients
        for attempt in client.attempts
        if attempt.status == 202 and attempt.answered >= fault_end and attempt.accepted + attempt.duplicates
    ]
    scored_after = [when for when in ledger.scored_at.values() if when >= fault_end]
    # Everything sent before the fault ended and stored in the end must be scored.
    backlog = [
        ledger.scored_at[event_id]
        for client in clients
        for event_id, record in client.records.items()
        if record.first_sent < fault_end and event_id in ledger.scored_at
    ]
    return Recovery(
        first_accepted=min(answers) - fault_end if answers else None,
        first_scored=min(scored_after) - fault_end if scored_after else None,
        all_scored=max(max(backlog) - fault_end, 0.0) if backlog else None,
    )
