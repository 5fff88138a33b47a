"""The raw baselines each service is compared with, measured in the same run:

- `raw_publish`: what nats-py alone achieves publishing the very payloads ingest publishes
  (same subjects, `Nats-Msg-Id`, expected-stream header, acked by JetStream), from one process,
  with a window of concurrent acks like ingest's. It is the ceiling for ingest.
- `raw_insert`: what PyMySQL alone achieves inserting the very `events` and `ledger` rows the
  scorer wrote, as multi-row INSERTs, one transaction per scorer batch. It is the floor of the
  scorer's database work (the scorer also locks users and upserts totals, caps and boards).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nats
from sqlalchemy import create_engine, text

from gamify.db import tables as t
from gamify.naming import ProgramNames

MSG_ID_HEADER = "Nats-Msg-Id"
PUBLISH_WINDOW = 4096  # acks in flight at once; ingest's publisher uses the same bound

EVENT_COLUMNS = "event_id, type, user_id, occurred_at, received_at, source, properties, stream_seq, scored_at"
LEDGER_COLUMNS = (
    "event_id, user_id, kind, rule_id, reward_id, base_points, multiplier, points, occurred_at, "
    "local_day, created_at"
)


@dataclass(frozen=True)
class PublishResult:
    events: int
    seconds: float
    duplicates: int
    cpu_seconds: float  # of this (publishing) process

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


async def raw_publish(
    nats_url: str,
    names: ProgramNames,
    payloads: Sequence[tuple[str, str, bytes]],
    window: int = PUBLISH_WINDOW,
) -> PublishResult:
    """Publish (event id, type, bytes) with JetStream acks, `window` in flight; time until all acked."""
    connection = await nats.connect(nats_url, connect_timeout=3)
    try:
        js = connection.jetstream(publish_async_max_pending=window)
        started, cpu = time.perf_counter(), time.process_time()
        futures = [
            await js.publish_async(
                names.event_subject(event_type),
                data,
                headers={MSG_ID_HEADER: event_id},
                stream=names.stream,
            )
            for event_id, event_type, data in payloads
        ]
        acks = await asyncio.gather(*futures)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await connection.close()
    return PublishResult(len(payloads), elapsed, sum(1 for ack in acks if ack.duplicate), cpu)


@dataclass(frozen=True)
class ScoredRows:
    """The rows one scoring run wrote, grouped into the scorer's batches (stream order)."""

    batches: list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]  # (events rows, ledger rows)

    @property
    def events(self) -> int:
        return sum(len(events) for events, _ in self.batches)

    @property
    def ledger(self) -> int:
        return sum(len(ledger) for _, ledger in self.batches)


def read_scored_rows(database_url: str, batch_size: int) -> ScoredRows:
    """Read back what the scorer wrote to `events` and `ledger`, cut into batches of `batch_size`."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            events = [
                tuple(row)
                for row in connection.execute(
                    text(f"SELECT {EVENT_COLUMNS} FROM {t.events.name} ORDER BY stream_seq")
                )
            ]
            ledger_by_event: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
            for row in connection.execute(text(f"SELECT {LEDGER_COLUMNS} FROM {t.ledger.name} ORDER BY id")):
                ledger_by_event[row[0]].append(tuple(row))
    finally:
        engine.dispose()
    batches = []
    for start in range(0, len(events), batch_size):
        chunk = events[start : start + batch_size]
        ledger = [row for event in chunk for row in ledger_by_event.get(event[0], [])]
        batches.append((chunk, ledger))
    return ScoredRows(batches)


@dataclass(frozen=True)
class InsertResult:
    events: int
    ledger: int
    seconds: float
    cpu_seconds: float  # of this (inserting) process

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def raw_insert(database_url: str, rows: ScoredRows) -> InsertResult:
    """Insert `rows` into empty `events`/`ledger` tables: one transaction per batch, each table
    one multi-row INSERT (PyMySQL rewrites executemany of `INSERT ... VALUES` into one)."""
    engine = create_engine(database_url, isolation_level="READ COMMITTED")
    insert_events = (
        f"INSERT INTO {t.events.name} ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    insert_ledger = (
        f"INSERT INTO {t.ledger.name} ({LEDGER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    try:
        with engine.connect() as connection:
            connection.execute(text(f"TRUNCATE TABLE {t.events.name}"))
            connection.execute(text(f"TRUNCATE TABLE {t.ledger.name}"))
            connection.commit()
            started, cpu = time.perf_counter(), time.process_time()
            for events, ledger in rows.batches:
                with connection.begin():
                    connection.exec_driver_sql(insert_events, events)
                    if ledger:
                        connection.exec_driver_sql(insert_ledger, ledger)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        engine.dispose()
    return InsertResult(rows.events, rows.ledger, elapsed, cpu)
