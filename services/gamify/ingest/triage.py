"""Sorting the events of one request: to publish, rejected (with reasons), or repeated.

Each event is judged on its own, so one bad event never sinks its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gamify.events import EventRejected, StreamEvent, parse_event
from gamify.ingest.models import RejectedEvent
from gamify.program import ProgramSpec
from gamify.schedule import event_time_check, event_time_problem

INVALID = "invalid"  # reason class for a schema problem; time problems use TimeProblem values
_MAX_ECHOED_ID = 128  # a longer "id" is invalid anyway: do not echo it back


@dataclass
class Triage:
    to_publish: list[StreamEvent] = field(default_factory=list)
    rejected: list[RejectedEvent] = field(default_factory=list)
    reject_classes: list[str] = field(default_factory=list)  # parallel to `rejected`, for metrics
    repeated: list[str] = field(default_factory=list)  # ids already earlier in the same request

    def reject(self, index: int, event_id: str | None, reason: str, reason_class: str) -> None:
        echoed = event_id if event_id is not None and len(event_id) <= _MAX_ECHOED_ID else None
        self.rejected.append(RejectedEvent(index=index, id=echoed, reason=reason))
        self.reject_classes.append(reason_class)


def triage(spec: ProgramSpec, items: list[Any], now: datetime) -> Triage:
    """Validate every raw event (schema, then occurredAt against the schedule), drop repeats."""
    result = Triage()
    seen: set[str] = set()
    for index, item in enumerate(items):
        try:
            event = parse_event(item, received_at=now)
        except EventRejected as exc:
            result.reject(index, exc.event_id, exc.reason, INVALID)
            continue
        problem = event_time_check(spec, event.occurred_at, now)
        if problem is not None:
            reason = event_time_problem(spec, event.occurred_at, now) or problem.value
            result.reject(index, event.id, reason, problem.value)
            continue
        if event.id in seen:
            result.repeated.append(event.id)
            continue
        seen.add(event.id)
        result.to_publish.append(event)
    return result
