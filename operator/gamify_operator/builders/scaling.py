"""How many pods each workload of a program runs (Deployments, autoscaler, quota and PDB agree)."""

from __future__ import annotations

from dataclasses import dataclass

from gamify.program import Program

# A RollingUpdate adds one pod before removing one (maxSurge 1, maxUnavailable 0).
ROLLING_SURGE = 1


@dataclass(frozen=True)
class Bounds:
    minimum: int
    maximum: int


def autoscaling_bounds(program: Program) -> Bounds | None:
    """The ingest autoscaler's bounds, or None when `spec.ingest` sets no bound.

    One bound alone is completed from `replicas`; an inverted pair is read as the widest range
    it names (the API server's schema is the place to refuse it, the builder must not crash).
    """
    ingest = program.spec.ingest
    if ingest.min_replicas is None and ingest.max_replicas is None:
        return None
    low = ingest.min_replicas or max(1, min(ingest.replicas, ingest.max_replicas or ingest.replicas))
    high = ingest.max_replicas or max(low, ingest.replicas)
    return Bounds(minimum=min(low, high), maximum=max(low, high))


def ingest_replicas(program: Program, scaled_to_zero: bool, current: int | None = None) -> int | None:
    """`spec.replicas` of the ingest Deployment; None leaves the field to the autoscaler.

    With autoscaling the operator must not write `replicas` on every reconcile (it would undo
    the autoscaler), except to start from the lower bound: on creation (`current` None) and
    when coming back from zero (an autoscaler never scales up from 0 replicas).
    """
    if scaled_to_zero:
        return 0
    bounds = autoscaling_bounds(program)
    if bounds is None:
        return program.spec.ingest.replicas
    if current is None or current == 0:
        return bounds.minimum
    return None


def ingest_steady_replicas(program: Program) -> int:
    """Replicas ingest runs with when nothing scales it: what the disruption budget protects."""
    bounds = autoscaling_bounds(program)
    return bounds.minimum if bounds else program.spec.ingest.replicas


def peak_pods(program: Program) -> dict[str, int]:
    """The most pods each workload can have at once (during a rollout, at the autoscaler's max)."""
    bounds = autoscaling_bounds(program)
    ingest = bounds.maximum if bounds else program.spec.ingest.replicas
    return {
        "ingest": ingest + ROLLING_SURGE,
        "scoring": program.spec.scoring.replicas + ROLLING_SURGE,
        "snapshots": 1,  # concurrencyPolicy Forbid; a retry starts after the failed pod ended
    }
