"""Scoring test helpers on the real NATS JetStream and MariaDB: a provisioned program (stream,
durable, schema), publishing as ingest does, workers as tasks, waiting for the drain, reading rows,
and the rules engine's own totals to compare with. test_scoring, test_scoring_faults, test_erasure
and test_puller share them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy import create_engine, text

from gamify.credentials import generate_password
from gamify.events import StreamEvent
from gamify.naming import ProgramNames
from gamify.program import Program, parse_program
from gamify.provisioning import mysql as schema
from gamify.provisioning import nats as stream
from gamify.rules.engine import RulesEngine, ScorableEvent, UserState
from gamify.scoring.worker import ScoringWorker
from tests.conftest import unique_program_id

MSG_ID = "Nats-Msg-Id"
DRAIN_TIMEOUT = 30.0


def program_document(program_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gamification.io/v1alpha1",
        "kind": "GamificationProgram",
        "metadata": {"name": program_id},
        "spec": {"tenant": "acme", **spec},
    }


@dataclass(frozen=True)
class Target:
    """A provisioned program: its stream, durable consumer, schema and program user."""

    program: Program
    names: ProgramNames
    nats_url: str
    database_url: str
    nc: NATS
    js: JetStreamContext


@asynccontextmanager
async def provisioned(
    spec: dict[str, Any], nats_url: str, mysql_admin_url: str, *, ack_wait: float | None = None
) -> AsyncIterator[Target]:
    """Stream, consumer and schema made by the platform's own provisioning code; deleted after.

    `ack_wait` shortens the consumer's ack wait (30 s in production) for tests that kill
    workers and must not wait that long for redeliveries.
    """
    program = parse_program(program_document(unique_program_id("sc"), spec))
    names = ProgramNames(program.name)
    nc = await nats.connect(nats_url, connect_timeout=3)
    js = nc.jetstream()
    database_url = ""
    try:
        await stream.ensure_stream(js, names, max_age=timedelta(days=1))
        await stream.ensure_consumer(js, names)
        if ack_wait is not None:
            await js.add_consumer(names.stream, replace(stream.consumer_config(names), ack_wait=ack_wait))
        database_url = await asyncio.to_thread(
            schema.ensure_schema, mysql_admin_url, names, generate_password()
        )
        yield Target(program, names, nats_url, database_url, nc, js)
    finally:
        await stream.delete_stream(js, names)
        await nc.close()
        await asyncio.to_thread(schema.drop_schema, mysql_admin_url, names)


def stream_event(
    event_id: str, event_type: str, user: str, occurred_at: str, **properties: Any
) -> StreamEvent:
    return StreamEvent.model_validate(
        {
            "id": event_id,
            "type": event_type,
            "user": user,
            "occurredAt": occurred_at,
            "properties": properties,
            "receivedAt": datetime.now(UTC),
        }
    )


async def publish(
    target: Target, events: Sequence[StreamEvent], msg_ids: Sequence[str] | None = None
) -> None:
    """Publish as ingest does (Nats-Msg-Id = event id unless given); wait for every ack."""
    ids = msg_ids or [event.id for event in events]
    futures = [
        await target.js.publish_async(
            target.names.event_subject(event.type),
            event.to_bytes(),
            headers={MSG_ID: msg_id},
            stream=target.names.stream,
        )
        for event, msg_id in zip(events, ids, strict=True)
    ]
    await asyncio.gather(*futures)


async def wait_drained(
    target: Target, timeout: float = DRAIN_TIMEOUT, tasks: Sequence[asyncio.Task[Any]] = ()
) -> None:
    """Until the durable has nothing pending and nothing unacknowledged."""
    deadline = time.monotonic() + timeout
    while True:
        info = await target.js.consumer_info(target.names.stream, target.names.durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        for task in tasks:
            if task.done():
                task.result()  # a crashed worker fails the test with its own error
                pytest.fail("a worker stopped before the stream was drained")
        if time.monotonic() > deadline:
            pytest.fail(
                f"not drained after {timeout}s: {info.num_pending} pending, {info.num_ack_pending} unacked"
            )
        await asyncio.sleep(0.1)


@asynccontextmanager
async def running_workers(
    target: Target, count: int = 1, **options: Any
) -> AsyncIterator[list[ScoringWorker]]:
    """`count` workers as tasks of this test; stopped (and their errors raised) on exit."""
    stop = asyncio.Event()
    workers = [
        ScoringWorker(target.program, target.nats_url, target.database_url, **options) for _ in range(count)
    ]
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
    try:
        yield workers
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)


def query(database_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def pure_totals(program: Program, events: Sequence[StreamEvent]) -> dict[str, tuple[int, int]]:
    """(points, spent) per user from the rules engine alone, events in the given order."""
    engine = RulesEngine(program.spec)
    states: dict[str, UserState] = {}
    stock: dict[str, int | None] = {reward.id: reward.stock for reward in program.spec.rewards}
    for event in events:
        state = states.setdefault(event.user, UserState(event.user))
        scorable = ScorableEvent(event.id, event.type, event.user, event.occurred_at, event.properties)
        engine.score(scorable, state, stock)
    return {user: (state.points, state.spent) for user, state in states.items()}


# Sao Paulo is UTC-3 all year (no DST since 2019). 2027-01-01 is a Friday: Jan 1-3 fall in ISO
# week 2026-W53, Monday Jan 4 starts 2027-W01.
SCENARIO_SPEC: dict[str, Any] = {
    "schedule": {
        "start": "2027-01-01T00:00:00-03:00",
        "end": "2027-02-01T00:00:00-03:00",
        "timezone": "America/Sao_Paulo",
    },
    "mode": "both",
    "rules": [
        {"id": "steps", "event": "activity.steps", "points": 10, "unit": {"property": "steps", "size": 1000},
         "dailyCap": 50},
        {"id": "login", "event": "app.login", "points": 5},
        {"id": "first-login", "event": "app.login", "points": 20, "oncePerUser": True},
        {"id": "marathon", "event": "activity.run", "points": 1000,
         "unit": {"property": "meters", "size": 1}},
    ],
    "boosts": [
        {"name": "launch", "start": "2027-01-01T00:00:00-03:00", "end": "2027-01-04T00:00:00-03:00",
         "multiplier": 2},
        {"name": "weekend", "start": "2027-01-02T00:00:00-03:00", "end": "2027-01-03T00:00:00-03:00",
         "multiplier": 1.5},
    ],
    "badges": [
        {"id": "fifty", "name": "Fifty", "minPoints": 50},
        {"id": "regular", "name": "Regular", "rule": "login", "minCount": 3},
    ],
    "rewards": [
        {"id": "mug", "name": "Mug", "cost": 40, "stock": 1},
        {"id": "bike", "name": "Bike", "cost": 1000},
    ],
    "leaderboards": [
        {"id": "overall", "window": "all-time"},
        {"id": "week", "window": "weekly"},
        {"id": "today", "window": "daily"},
    ],
}  # fmt: skip
