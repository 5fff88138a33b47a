"""When a program takes events (DESIGN.md, "Scoring semantics"), as pure functions.

Two levels:
- the whole request: refused with 409 while the program is suspended or not started yet, and
  410 once `end + gracePeriod` has passed (`request_gate`);
- each event: rejected (with a reason, its batch still accepted) when it occurred before
  `start`, after `end`, or more than 5 minutes in the future (`event_time_problem`).

The instants themselves belong to the program: exactly `start`, exactly `end` and exactly
`end + gracePeriod` are all still inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from gamify.program import ProgramSpec

MAX_CLOCK_SKEW = timedelta(minutes=5)


def _rfc3339(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


class GateReason(StrEnum):
    suspended = "suspended"
    not_started = "not_started"
    ended = "ended"


@dataclass(frozen=True)
class Gate:
    """Why a whole request is refused, and what to tell the client."""

    status: int  # 409 (may open later) or 410 (closed for good, unless the end is extended)
    reason: GateReason
    message: str
    start: datetime
    end: datetime
    accepting_until: datetime  # end + gracePeriod: last instant events are still taken

    def body(self) -> dict[str, Any]:
        return {
            "error": self.reason.value,
            "message": self.message,
            "start": _rfc3339(self.start),
            "end": _rfc3339(self.end),
            "acceptingUntil": _rfc3339(self.accepting_until),
        }


def request_gate(spec: ProgramSpec, now: datetime) -> Gate | None:
    """The refusal for a request arriving at `now`, or None when the program takes events."""
    start, end = spec.schedule.start, spec.schedule.end
    until = end + spec.schedule.grace

    def gate(status: int, reason: GateReason, message: str) -> Gate:
        return Gate(status, reason, message, start, end, until)

    if spec.suspend:
        return gate(409, GateReason.suspended, "the program is suspended: it takes no events for now")
    if now < start:
        return gate(409, GateReason.not_started, f"the program starts at {_rfc3339(start)}")
    if now > until:
        return gate(
            410,
            GateReason.ended,
            f"the program ended at {_rfc3339(end)} and took late events until {_rfc3339(until)}",
        )
    return None


class TimeProblem(StrEnum):
    before_start = "before_start"
    after_end = "after_end"
    in_future = "in_future"


def event_time_check(spec: ProgramSpec, occurred_at: datetime, now: datetime) -> TimeProblem | None:
    """Which time rule an event breaks (for metrics: a small, fixed set of classes)."""
    if occurred_at < spec.schedule.start:
        return TimeProblem.before_start
    if occurred_at > spec.schedule.end:
        return TimeProblem.after_end
    if occurred_at > now + MAX_CLOCK_SKEW:
        return TimeProblem.in_future
    return None


def event_time_problem(spec: ProgramSpec, occurred_at: datetime, now: datetime) -> str | None:
    """The reason an event's `occurredAt` is refused, naming the field; None when it is fine."""
    problem = event_time_check(spec, occurred_at, now)
    if problem is None:
        return None
    when = _rfc3339(occurred_at)
    if problem is TimeProblem.before_start:
        return f"occurredAt: {when} is before the program start {_rfc3339(spec.schedule.start)}"
    if problem is TimeProblem.after_end:
        return f"occurredAt: {when} is after the program end {_rfc3339(spec.schedule.end)}"
    return f"occurredAt: {when} is more than 5 minutes in the future (server time {_rfc3339(now)})"
