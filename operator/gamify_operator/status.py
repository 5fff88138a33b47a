"""Status conditions in the standard Kubernetes shape (pure functions).

One condition per component of a program, plus `Ready` summing them up:

=========== ==============================================================================
Namespace   the program's namespace, quota, limits and network policies are applied
Stream      the JetStream stream and the durable scoring consumer exist (NATS)
Database    the schema, its own user, the grants and the migrations are in place (MySQL)
Bucket      the bucket prefix is reachable and marked as the program's
Secrets     API keys, database and NATS credentials are stored (generated once)
Workloads   ingest and scoring Deployments, Service, autoscaler and budget are applied
Snapshots   the snapshot CronJob is applied; once the program closed, the final snapshot
Ready       every condition above is True
=========== ==============================================================================

`lastTransitionTime` changes only when a condition's `status` does (so it tells since when a
component has been failing, not when the operator last looked); `observedGeneration` is the
`metadata.generation` the condition was computed for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gamify_operator.lifecycle import rfc3339

NAMESPACE = "Namespace"
STREAM = "Stream"
DATABASE = "Database"
BUCKET = "Bucket"
SECRETS = "Secrets"
WORKLOADS = "Workloads"
SNAPSHOTS = "Snapshots"
READY = "Ready"
COMPONENTS = (NAMESPACE, STREAM, DATABASE, BUCKET, SECRETS, WORKLOADS, SNAPSHOTS)
ORDER = (*COMPONENTS, READY)

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Condition:
    """One observation; `status` is True, False or Unknown (strings, as the API wants them)."""

    type: str
    status: str
    reason: str
    message: str = ""

    @classmethod
    def ok(cls, type_: str, reason: str, message: str = "") -> Condition:
        return cls(type_, TRUE, reason, message)

    @classmethod
    def failed(cls, type_: str, reason: str, message: str = "") -> Condition:
        return cls(type_, FALSE, reason, message)

    @classmethod
    def unknown(cls, type_: str, reason: str, message: str = "") -> Condition:
        return cls(type_, UNKNOWN, reason, message)


def _index(conditions: Iterable[Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {str(c["type"]): dict(c) for c in conditions or [] if isinstance(c, Mapping) and c.get("type")}


def render(
    condition: Condition, generation: int, now: datetime, previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The API object of `condition`, keeping the previous transition time if status held."""
    since = rfc3339(now)
    if previous is not None and previous.get("status") == condition.status:
        since = str(previous.get("lastTransitionTime") or since)
    return {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": condition.message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def merge(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """`existing` with `updates` applied: known types in a fixed order, others kept after them."""
    current = _index(existing)
    for condition in updates:
        current[condition.type] = render(condition, generation, now, current.get(condition.type))
    known = [current.pop(kind) for kind in ORDER if kind in current]
    return known + [current[kind] for kind in sorted(current)]


def ready(conditions: Sequence[Mapping[str, Any]]) -> Condition:
    """`Ready` from the component conditions present (a missing component is not ready)."""
    by_type = _index(conditions)
    missing = [kind for kind in COMPONENTS if kind not in by_type]
    failing = [kind for kind in COMPONENTS if kind in by_type and by_type[kind].get("status") != TRUE]
    if not missing and not failing:
        return Condition.ok(READY, "Reconciled", "every component is ready")
    parts = []
    if failing:
        parts.append("not ready: " + ", ".join(failing))
    if missing:
        parts.append("not reconciled yet: " + ", ".join(missing))
    status = FALSE if any(by_type[kind].get("status") == FALSE for kind in failing) else UNKNOWN
    return Condition(READY, status, "ComponentsNotReady", "; ".join(parts))


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return _index(conditions).get(type_)
