"""GamificationProgram documents for tests: one builder, so each test states only what it varies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def program_document(
    name: str, start: datetime | None = None, *, days: int = 30, timezone: str | None = None, **spec: Any
) -> dict[str, Any]:
    """A ranking program of tenant `acme` with one rule (`app.visit`, 10 points) and one board,
    running `days` from `start` (a day ago by default); keyword arguments replace spec fields."""
    start = start or datetime.now(UTC) - timedelta(days=1)
    schedule: dict[str, Any] = {"start": start.isoformat(), "end": (start + timedelta(days=days)).isoformat()}
    if timezone is not None:
        schedule["timezone"] = timezone
    base: dict[str, Any] = {
        "tenant": "acme",
        "schedule": schedule,
        "mode": "ranking",
        "rules": [visit_rule()],
        "leaderboards": [{"id": "overall"}],
    }
    return {
        "apiVersion": "gamification.io/v1alpha1",
        "kind": "GamificationProgram",
        "metadata": {"name": name},
        "spec": {**base, **spec},
    }


def visit_rule(points: int = 10) -> dict[str, Any]:
    """The rule most tests score with: `points` per `app.visit` event."""
    return {"id": "visit", "event": "app.visit", "points": points}
