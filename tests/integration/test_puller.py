"""BatchPuller (the scoring worker's fetch) and scoring lanes, on the real NATS JetStream and MariaDB."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gamify.events import StreamEvent
from gamify.scoring.puller import BatchPuller, stream_sequence
from gamify.scoring.worker import ScoringWorker
from tests.integration import scoring_support as scoring


async def _puller(target: scoring.Target) -> BatchPuller:
    puller = BatchPuller(target.nc, target.names.stream, target.names.durable)
    await puller.start()
    return puller


def _steps(count: int, users: int, tag: str = "p") -> list[StreamEvent]:
    return [
        scoring.stream_event(
            f"{tag}{index}", "activity.steps", f"u{index % users}", "2027-01-05T12:00:00Z", steps=1000
        )
        for index in range(count)
    ]


async def test_fetch_returns_what_is_pending_up_to_the_batch(nats_url: str, mysql_admin_url: str) -> None:
    async with scoring.provisioned(scoring.SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
        events = _steps(25, users=5)
        await scoring.publish(target, events)
        puller = await _puller(target)
        try:
            first = await puller.fetch(10, timeout=2)
            second = await puller.fetch(10, timeout=2)
            third = await puller.fetch(10, timeout=2)
            assert [len(first), len(second), len(third)] == [10, 10, 5]
            got = [msg.header["Nats-Msg-Id"] for msg in first + second + third]  # type: ignore[index]
            assert got == [event.id for event in events]  # in stream order, each once
            fetched = first + second + third
            sequences = [msg.metadata.sequence.stream for msg in fetched]
            assert [stream_sequence(msg) for msg in fetched] == sequences
            for msg in fetched:
                await msg.ack()
            # Nothing left: an empty list once the timeout has passed, not an error.
            started = time.monotonic()
            assert await puller.fetch(10, timeout=0.5) == []
            assert 0.4 <= time.monotonic() - started < 2.0
        finally:
            await puller.stop()


async def test_fetch_waits_for_the_first_message_to_arrive(nats_url: str, mysql_admin_url: str) -> None:
    async with scoring.provisioned(scoring.SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
        puller = await _puller(target)
        try:
            waiting = asyncio.create_task(puller.fetch(50, timeout=5))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            started = time.monotonic()
            await scoring.publish(target, _steps(3, users=3))
            got = await waiting
            # Returned on arrival, long before the 5 s timeout; what came later is not lost.
            assert time.monotonic() - started < 2.0
            rest = await puller.fetch(50, timeout=1) if len(got) < 3 else []
            assert len(got) + len(rest) == 3
        finally:
            await puller.stop()


async def test_two_lanes_score_exactly_what_one_lane_scores(nats_url: str, mysql_admin_url: str) -> None:
    """Many users, no redemptions: the batch is split between lanes; totals must not change."""
    events = _steps(400, users=40) + [
        scoring.stream_event(f"l{index}", "app.login", f"u{index % 40}", "2027-01-06T10:00:00-03:00")
        for index in range(120)
    ]
    results = []
    for lanes in (1, 2):
        async with scoring.provisioned(scoring.SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
            await scoring.publish(target, events)
            async with scoring.running_workers(target, batch_size=200, lanes=lanes) as workers:
                await scoring.wait_drained(target)
            assert workers[0].totals.scored == len(events)
            # Two lanes really ran: more committed batches than fetches of 200.
            if lanes == 2:
                assert workers[0].totals.batches > len(events) / 200 + 1
            results.append(
                scoring.query(target.database_url, "SELECT user_id, points FROM users ORDER BY user_id")
            )
            expected = scoring.pure_totals(target.program, events)
    assert results[0] == results[1]
    assert {user: points for user, points in results[1]} == {user: pts for user, (pts, _) in expected.items()}


async def test_a_crashed_lane_stops_the_worker_with_its_error(
    nats_url: str, mysql_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lane that dies (here: a bug injected into handle) must not leave the worker fetching
    forever with one lane gone: run() raises that error, and what it held is redelivered."""
    original = ScoringWorker.handle
    calls = 0

    async def failing_second_part(self: ScoringWorker, fetched: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("injected lane failure")
        await original(self, fetched)

    monkeypatch.setattr(ScoringWorker, "handle", failing_second_part)
    async with scoring.provisioned(scoring.SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
        await scoring.publish(target, _steps(400, users=40))
        worker = ScoringWorker(target.program, target.nats_url, target.database_url, batch_size=100, lanes=2)
        with pytest.raises(RuntimeError, match="injected lane failure"):
            await asyncio.wait_for(worker.run(), timeout=30)
