"""Prometheus metrics of one ingest app, in its own registry (two apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "IngestMetrics"]

BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500)
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gamify_ingest_requests",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "gamify_ingest_events",
            "Events by outcome (accepted, duplicate, rejected) and reason class for rejections.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "gamify_ingest_publish_seconds",
            "Time to publish one request's events and receive every JetStream ack.",
            buckets=PUBLISH_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "gamify_ingest_batch_size",
            "Events per request.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.publish_failures = Counter(
            "gamify_ingest_publish_failures",
            "Requests answered 503 because the stream could not take their events.",
            registry=self.registry,
        )
        self.nats_connected = Gauge(
            "gamify_ingest_nats_connected", "1 while connected to NATS.", registry=self.registry
        )

    def count_event(self, outcome: str, reason: str = "", n: int = 1) -> None:
        if n:
            self.events.labels(outcome=outcome, reason=reason).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
