"""Benchmark 1: events/s one ingest process accepts, next to raw nats-py acked publishing.

Per run, on the same stream: the load generator (its own process) POSTs batches of 100 over
several connections to one ingest process (`python -m gamify.ingest`, uvicorn, as deployed),
as fast as answers come back; and this process publishes the same number of events, the same
payloads ingest would publish, straight to JetStream. Which one goes first alternates, so a
slow drift of the machine's load hurts both alike. Target: ingest >= 50% of raw publishing.

A second ingest process with `GAMIFY_LOG_LEVEL=WARNING` gets the same load in each run: the
difference is what the per-event INFO log lines cost (production logs at INFO).
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
    events: int = 30_000
    connections: int = 8
    warmup_events: int = 3_000
    quiet_variant: bool = True


@dataclass
class IngestResults:
    config: IngestConfig
    ingest: list[float] = field(default_factory=list)  # accepted events/s
    raw: list[float] = field(default_factory=list)  # acked publishes/s
    ratios: list[float] = field(default_factory=list)
    quiet: list[float] = field(default_factory=list)  # accepted events/s, logs at WARNING
    quiet_ratios: list[float] = field(default_factory=list)
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


def _measured_load(
    ingest: IngestProcess, api_key: str, config: IngestConfig
) -> tuple[dict[str, Any], dict[str, float]]:
    """One closed-loop load, with the CPU seconds ingest and the servers used meanwhile."""
    meter = CpuMeter({"ingest": ingest.proc.pid, **server_pids()}).start()
    load = _load(ingest, api_key, config.events, config.connections)
    return load, meter.stop()


def _per_thousand(cpu_seconds: float, events: int) -> float:
    """CPU milliseconds per 1,000 events (= microseconds per event)."""
    return cpu_seconds / events * 1_000_000


async def run(config: IngestConfig, servers: Servers, workdir: Path) -> IngestResults:
    results = IngestResults(config)
    extra = results.extra
    async with provisioned("ingest", servers, workdir) as target:
        ingest = IngestProcess.start(target, workdir / f"{target.program.name}-ingest.log")
        quiet = None
        try:
            if config.quiet_variant:
                quiet_log = workdir / f"{target.program.name}-ingest-quiet.log"
                quiet = IngestProcess.start(target, quiet_log, log_level="WARNING")
                _load(quiet, target.api_key, config.warmup_events, config.connections)
            warm = _load(ingest, target.api_key, config.warmup_events, config.connections)
            progress("ingest", f"warm-up: {warm['accepted']} events accepted")
            for index in range(config.runs):
                payloads = stream_payloads(make_events(config.events, USERS, new_tag()))
                ingest_first = index % 2 == 1
                if ingest_first:
                    load, used = _measured_load(ingest, target.api_key, config)
                raw_meter = CpuMeter(server_pids()).start()
                published = await raw_publish(servers.nats_url, target.names, payloads)
                raw_used = raw_meter.stop()
                if not ingest_first:
                    load, used = _measured_load(ingest, target.api_key, config)
                if load["accepted"] != config.events or load["statuses"] != {"202": load["requests"]}:
                    results.problems.append(
                        f"run {index + 1}: accepted {load['accepted']} of {config.events}, "
                        f"statuses {load['statuses']}"
                    )
                if published.duplicates:
                    results.problems.append(f"run {index + 1}: {published.duplicates} raw duplicates")
                rate = float(load["accepted_per_second"])
                results.ingest.append(rate)
                results.raw.append(published.per_second)
                results.ratios.append(rate / published.per_second)
                results.request_p50_ms.append(float(load["request_p50_ms"]))
                results.request_p99_ms.append(float(load["request_p99_ms"]))
                events = config.events
                extra["ingest process: CPU ms per 1,000 events"].append(_per_thousand(used["ingest"], events))
                extra["ingest process: cores busy"].append(used["ingest"] / float(load["seconds"]))
                extra["load generator: CPU ms per 1,000 events"].append(
                    _per_thousand(float(load["cpu_seconds"]), events)
                )
                extra["raw publisher: CPU ms per 1,000 events"].append(
                    _per_thousand(published.cpu_seconds, events)
                )
                extra["raw publisher: cores busy"].append(published.cpu_seconds / published.seconds)
                if "nats" in used and "nats" in raw_used:
                    extra["nats-server: CPU ms per 1,000 events, ingest"].append(
                        _per_thousand(used["nats"], events)
                    )
                    extra["nats-server: CPU ms per 1,000 events, raw"].append(
                        _per_thousand(raw_used["nats"], events)
                    )
                line = (
                    f"run {index + 1}/{config.runs}: ingest {rate:,.0f} ev/s, raw publish "
                    f"{published.per_second:,.0f} ev/s, ratio {rate / published.per_second:.0%}"
                )
                if quiet is not None:
                    quiet_load, quiet_used = _measured_load(quiet, target.api_key, config)
                    quiet_rate = float(quiet_load["accepted_per_second"])
                    results.quiet.append(quiet_rate)
                    results.quiet_ratios.append(quiet_rate / published.per_second)
                    extra["ingest at WARNING: CPU ms per 1,000 events"].append(
                        _per_thousand(quiet_used["ingest"], events)
                    )
                    line += (
                        f"; logs at WARNING {quiet_rate:,.0f} ev/s ({quiet_rate / published.per_second:.0%})"
                    )
                progress("ingest", line)
        finally:
            if quiet is not None:
                quiet.stop()
            ingest.stop()
    return results
