"""Benchmark 1: events/s one ingest process accepts, next to raw nats-py acked publishing.

Per run, on the same stream: the load generator (its own process) POSTs batches of 100 over
several connections to one ingest process (`python -m gamify.ingest`, uvicorn, as deployed),
as fast as answers come back; and this process publishes the same number of events, the same
payloads ingest would publish, straight to JetStream. Each side runs in two halves, in the
order A B B A, so a drift or a burst of load from elsewhere hurts both sides alike; and since
both are CPU-bound, the ratio of their CPU time per event is reported too, as a cross-check.
Target: ingest >= 50% of raw publishing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.baselines import raw_publish
from bench.common import (
    CpuMeter,
    IngestProcess,
    Provisioned,
    Spread,
    make_events,
    new_tag,
    progress,
    provisioned,
    run_load,
    server_pids,
    stream_payloads,
)
from gamify.settings import Servers

TARGET_RATIO = 0.50
BATCH = 100
USERS = 5000


@dataclass(frozen=True)
class IngestConfig:
    runs: int = 5
    events: int = 50_000
    connections: int = 8
    warmup_events: int = 3_000


@dataclass
class IngestResults:
    config: IngestConfig
    ingest: list[float] = field(default_factory=list)  # accepted events/s
    raw: list[float] = field(default_factory=list)  # acked publishes/s
    ratios: list[float] = field(default_factory=list)
    request_p50_ms: list[float] = field(default_factory=list)
    request_p99_ms: list[float] = field(default_factory=list)
    # Where the CPU goes: label -> one value per run.
    extra: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> Spread:
        return Spread.of(self.ratios)

    @property
    def met(self) -> bool:
        return self.ratio.median >= TARGET_RATIO


def _load(ingest: IngestProcess, api_key: str, events: int, connections: int) -> dict[str, Any]:
    args = ["closed", "--url", ingest.url, "--tag", new_tag(), "--events", str(events)]
    args += ["--users", str(USERS), "--batch", str(BATCH), "--connections", str(connections)]
    return run_load(args, api_key, timeout=300)


def _per_thousand(cpu_seconds: float, events: int) -> float:
    """CPU milliseconds per 1,000 events (= microseconds per event)."""
    return cpu_seconds / events * 1_000_000


@dataclass
class _Side:
    """What one side (ingest or raw) did over the pieces of one run."""

    events: int = 0
    seconds: float = 0.0
    cpu: float = 0.0  # the ingest process's, or the raw publisher's
    nats_cpu: float = 0.0
    loads: list[dict[str, Any]] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


async def _one_run(
    index: int, config: IngestConfig, ingest: IngestProcess, target: Provisioned, results: IngestResults
) -> tuple[_Side, _Side]:
    """Two halves each, in the order A B B A (even runs start with raw publishing, odd runs with
    ingest): a drift or a burst of noise from elsewhere lands on both sides alike."""
    half = config.events // 2
    ingest_side, raw_side = _Side(), _Side()
    order = ["raw", "ingest", "ingest", "raw"] if index % 2 == 0 else ["ingest", "raw", "raw", "ingest"]
    for side in order:
        if side == "ingest":
            meter = CpuMeter({"ingest": ingest.proc.pid, **server_pids()}).start()
            load = _load(ingest, target.api_key, half, config.connections)
            used = meter.stop()
            ingest_side.events += int(load["accepted"])
            ingest_side.seconds += float(load["seconds"])
            ingest_side.cpu += used["ingest"]
            ingest_side.nats_cpu += used.get("nats", 0.0)
            ingest_side.loads.append(load)
            if load["accepted"] != half or load["statuses"] != {"202": load["requests"]}:
                results.problems.append(
                    f"run {index + 1}: accepted {load['accepted']} of {half}, statuses {load['statuses']}"
                )
        else:
            payloads = stream_payloads(make_events(half, USERS, new_tag()))
            meter = CpuMeter(server_pids()).start()
            published = await raw_publish(target.servers.nats_url, target.names, payloads)
            used = meter.stop()
            raw_side.events += published.events
            raw_side.seconds += published.seconds
            raw_side.cpu += published.cpu_seconds
            raw_side.nats_cpu += used.get("nats", 0.0)
            if published.duplicates:
                results.problems.append(f"run {index + 1}: {published.duplicates} raw duplicates")
    return ingest_side, raw_side


async def run(config: IngestConfig, servers: Servers, workdir: Path) -> IngestResults:
    results = IngestResults(config)
    extra = results.extra
    async with provisioned("ingest", servers, workdir) as target:
        ingest = IngestProcess.start(target, workdir / f"{target.program.name}-ingest.log")
        try:
            warm = _load(ingest, target.api_key, config.warmup_events, config.connections)
            progress("ingest", f"warm-up: {warm['accepted']} events accepted")
            for index in range(config.runs):
                ingest_side, raw_side = await _one_run(index, config, ingest, target, results)
                rate, raw_rate = ingest_side.per_second, raw_side.per_second
                results.ingest.append(rate)
                results.raw.append(raw_rate)
                results.ratios.append(rate / raw_rate)
                # Of the two halves, the worse one.
                loads = ingest_side.loads
                results.request_p50_ms.append(max(float(load["request_p50_ms"]) for load in loads))
                results.request_p99_ms.append(max(float(load["request_p99_ms"]) for load in loads))
                ingest_us = _per_thousand(ingest_side.cpu, ingest_side.events)
                raw_us = _per_thousand(raw_side.cpu, raw_side.events)
                extra["ingest process: CPU ms per 1,000 events"].append(ingest_us)
                extra["raw publisher: CPU ms per 1,000 events"].append(raw_us)
                extra["ratio of CPU per event, raw / ingest (%)"].append(100 * raw_us / ingest_us)
                extra["ingest process: cores busy"].append(ingest_side.cpu / ingest_side.seconds)
                extra["raw publisher: cores busy"].append(raw_side.cpu / raw_side.seconds)
                load_cpu = sum(float(load["cpu_seconds"]) for load in ingest_side.loads)
                extra["load generator: CPU ms per 1,000 events"].append(
                    _per_thousand(load_cpu, ingest_side.events)
                )
                if ingest_side.nats_cpu and raw_side.nats_cpu:
                    extra["nats-server: CPU ms per 1,000 events, ingest"].append(
                        _per_thousand(ingest_side.nats_cpu, ingest_side.events)
                    )
                    extra["nats-server: CPU ms per 1,000 events, raw"].append(
                        _per_thousand(raw_side.nats_cpu, raw_side.events)
                    )
                progress(
                    "ingest",
                    f"run {index + 1}/{config.runs}: ingest {rate:,.0f} ev/s, raw publish "
                    f"{raw_rate:,.0f} ev/s, ratio {rate / raw_rate:.0%} "
                    f"(CPU per event: ingest {ingest_us:.0f} µs, raw {raw_us:.0f} µs)",
                )
        finally:
            ingest.stop()
    return results
