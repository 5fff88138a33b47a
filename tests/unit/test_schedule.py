"""Request gates and per-event time rules at their edge instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gamify.program import ProgramSpec
from gamify.schedule import (
    MAX_CLOCK_SKEW,
    GateReason,
    TimeProblem,
    event_time_check,
    event_time_problem,
    request_gate,
)

START = datetime(2027, 1, 4, 3, 0, tzinfo=UTC)  # 2027-01-04T00:00:00-03:00
END = datetime(2027, 2, 1, 3, 0, tzinfo=UTC)
GRACE = timedelta(hours=72)
TICK = timedelta(microseconds=1)


def spec(suspend: bool = False, grace: str = "72h") -> ProgramSpec:
    return ProgramSpec.model_validate(
        {
            "tenant": "acme",
            "schedule": {
                "start": "2027-01-04T00:00:00-03:00",
                "end": "2027-02-01T00:00:00-03:00",
                "timezone": "America/Sao_Paulo",
                "gracePeriod": grace,
            },
            "rules": [{"id": "steps", "event": "activity.steps", "points": 1}],
            "suspend": suspend,
        }
    )


@pytest.mark.parametrize(
    ("now", "status", "reason"),
    [
        (START - TICK, 409, GateReason.not_started),
        (START, None, None),
        (END, None, None),
        (END + GRACE, None, None),
        (END + GRACE + TICK, 410, GateReason.ended),
    ],
)
def test_request_gate_edges(now: datetime, status: int | None, reason: GateReason | None) -> None:
    gate = request_gate(spec(), now)
    if status is None:
        assert gate is None
    else:
        assert gate is not None
        assert (gate.status, gate.reason) == (status, reason)


def test_suspended_is_409_even_while_running() -> None:
    gate = request_gate(spec(suspend=True), START + timedelta(days=1))
    assert gate is not None
    assert (gate.status, gate.reason) == (409, GateReason.suspended)


def test_gate_body_has_the_dates() -> None:
    gate = request_gate(spec(grace="1h"), END + timedelta(hours=2))
    assert gate is not None
    body = gate.body()
    assert body["error"] == "ended"
    assert body["start"] == "2027-01-04T00:00:00-03:00"
    assert body["end"] == "2027-02-01T00:00:00-03:00"
    assert body["acceptingUntil"] == "2027-02-01T01:00:00-03:00"
    assert "2027-02-01T00:00:00-03:00" in body["message"]


def test_not_started_body_names_the_start() -> None:
    gate = request_gate(spec(), START - timedelta(days=3))
    assert gate is not None
    assert gate.body()["error"] == "not_started"
    assert "2027-01-04T00:00:00-03:00" in gate.message


NOW = START + timedelta(days=10)


@pytest.mark.parametrize(
    ("occurred", "now", "problem"),
    [
        (START - TICK, NOW, TimeProblem.before_start),
        (START, NOW, None),
        (END, END + timedelta(hours=1), None),
        (END + TICK, END + timedelta(hours=1), TimeProblem.after_end),
        (NOW + MAX_CLOCK_SKEW, NOW, None),
        (NOW + MAX_CLOCK_SKEW + TICK, NOW, TimeProblem.in_future),
        (NOW - timedelta(days=5), NOW, None),
    ],
)
def test_event_time_edges(occurred: datetime, now: datetime, problem: TimeProblem | None) -> None:
    assert event_time_check(spec(), occurred, now) == problem
    message = event_time_problem(spec(), occurred, now)
    if problem is None:
        assert message is None
    else:
        assert message is not None
        assert message.startswith("occurredAt: ")


def test_event_time_messages_say_why() -> None:
    early = event_time_problem(spec(), START - timedelta(days=1), NOW)
    late = event_time_problem(spec(), END + timedelta(days=1), END + timedelta(days=2))
    future = event_time_problem(spec(), NOW + timedelta(hours=1), NOW)
    assert early is not None and "before the program start" in early
    assert late is not None and "after the program end" in late
    assert future is not None and "5 minutes in the future" in future


def test_late_event_inside_grace_is_fine_but_request_after_grace_is_gone() -> None:
    # Sent 2 days after the end, for something that happened on the last day: accepted.
    now = END + timedelta(days=2)
    assert request_gate(spec(), now) is None
    assert event_time_problem(spec(), END - timedelta(hours=5), now) is None
    # The same event sent 4 days after the end: the request is refused as a whole.
    gate = request_gate(spec(), END + timedelta(days=4))
    assert gate is not None and gate.status == 410
