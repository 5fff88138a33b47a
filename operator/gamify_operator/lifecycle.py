"""Where a program is in its life, from its dates and the clock alone (pure functions).

    Scheduled ──start──▶ Active ──end──▶ Ended ──end + gracePeriod──▶ Ended, closed
                            ▲                         │  final snapshot, ingest/scoring at 0,
                            └──── `end` moved later ──┘  snapshot CronJob suspended

- `spec.suspend` wins over the dates: phase Suspended, ingest at 0 replicas, nothing deleted.
- Between `end` and `end + gracePeriod` the program is Ended but still takes late events (ingest
  keeps running, DESIGN.md "Scoring semantics"); once closed, no event can arrive any more, so
  one final snapshot is published and the workloads are scaled to zero (cost).
- The instants belong to the program, as in `gamify.schedule`: exactly `start`, `end` and
  `end + gracePeriod` are still inside.
- Provisioning and Failed are not dates: the reconciler sets them (first reconcile running,
  spec the model refuses).

Extending a program is editing `spec.schedule.end`: every change is appended to
`status.extensions` as `{previousEnd, newEnd, at}`, oldest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gamify.program import ProgramSpec


class Phase(StrEnum):
    provisioning = "Provisioning"
    scheduled = "Scheduled"
    active = "Active"
    ended = "Ended"
    suspended = "Suspended"
    failed = "Failed"


def rfc3339(instant: datetime) -> str:
    """UTC, seconds precision, `Z` (how the status writes instants)."""
    return instant.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_instant(value: Any) -> datetime | None:
    """An RFC 3339 string (or datetime) from a status or a spec; None when absent or unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else None
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


@dataclass(frozen=True)
class Lifecycle:
    """The state the dates (and `suspend`) call for at one instant."""

    phase: Phase
    closed: bool  # past end + gracePeriod: no event may arrive any more
    accepting: bool  # ingest should run: not suspended and not closed
    next_transition: datetime | None  # the next instant the dates change something, if any


def lifecycle(spec: ProgramSpec, now: datetime) -> Lifecycle:
    start, end = spec.schedule.start, spec.schedule.end
    closes = end + spec.schedule.grace
    closed = now > closes
    upcoming: datetime | None
    if now < start:
        dated, upcoming = Phase.scheduled, start
    elif now <= end:
        dated, upcoming = Phase.active, end
    else:
        dated, upcoming = Phase.ended, None if closed else closes
    phase = Phase.suspended if spec.suspend else dated
    return Lifecycle(
        phase=phase,
        closed=closed,
        accepting=not spec.suspend and not closed,
        next_transition=upcoming,
    )


# --- the final snapshot, taken once per `end` ---------------------------------------------------


def final_snapshot_done(spec: ProgramSpec, record: Mapping[str, Any] | None) -> bool:
    """Whether `status.finalSnapshot` was taken for the program's current `end`.

    Extending an ended program and letting it close again calls for a new final snapshot, so
    the record names the `end` it was taken for.
    """
    if not record:
        return False
    taken_for = parse_instant(record.get("end"))
    return taken_for is not None and taken_for == spec.schedule.end


def final_snapshot_record(
    spec: ProgramSpec, *, at: datetime, version: int, snapshot_url: str, last_scored_position: int
) -> dict[str, Any]:
    """What `status.finalSnapshot` holds once the final snapshot is published."""
    return {
        "end": rfc3339(spec.schedule.end),
        "at": rfc3339(at),
        "version": version,
        "url": snapshot_url,
        "lastScoredPosition": last_scored_position,
    }


@dataclass(frozen=True)
class Scaling:
    """What the workloads run with (the `build_all` flags)."""

    ingest_to_zero: bool
    scoring_to_zero: bool
    snapshots_suspended: bool


def scaling(state: Lifecycle, final_snapshot_taken: bool) -> Scaling:
    """Ingest stops when suspended or closed; scoring and the CronJob stop only once closed and
    the final snapshot is out (scoring must finish the backlog the snapshot publishes)."""
    finished = state.closed and final_snapshot_taken
    return Scaling(
        ingest_to_zero=not state.accepting,
        scoring_to_zero=finished,
        snapshots_suspended=finished,
    )


# --- extensions -------------------------------------------------------------------------------


def end_change(previous_end: Any, new_end: Any, at: datetime) -> dict[str, str] | None:
    """The `status.extensions` entry for an edit of `spec.schedule.end`, or None if unchanged."""
    before, after = parse_instant(previous_end), parse_instant(new_end)
    if before is None or after is None or before == after:
        return None
    return {"previousEnd": rfc3339(before), "newEnd": rfc3339(after), "at": rfc3339(at)}


def with_extension(
    history: Sequence[Mapping[str, Any]] | None, entry: Mapping[str, str] | None
) -> list[dict[str, Any]]:
    """`history` plus `entry`, unless the last entry already records the same change (a handler
    retried after a failure sees the same edit again)."""
    result = [dict(item) for item in history or []]
    if entry is None:
        return result
    if result:
        last = result[-1]
        same = parse_instant(last.get("previousEnd")) == parse_instant(entry["previousEnd"]) and (
            parse_instant(last.get("newEnd")) == parse_instant(entry["newEnd"])
        )
        if same:
            return result
    result.append(dict(entry))
    return result
