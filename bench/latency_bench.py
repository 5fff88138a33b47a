"""Benchmark 3: accept -> scored latency at a fixed offered load of 2,000 events/s.

One ingest process and one scoring worker run as deployed; the load generator (its own
process) sends a batch of 20 events every 10 ms on a fixed schedule (open loop: it never waits
for answers, so a slow pipeline shows up as latency, not as a lower offered rate) for ~30 s.
For every event, scored = `events.scored_at` (UTC, set by MariaDB when the worker inserts the
event's row inside the batch's transaction; the rest of that transaction and its commit, a few
ms, are not included), measured from three starting points, all on this machine's clock:
- accepted: `events.received_at`, the event's receivedAt stamped by ingest when its request
  arrived (before publishing: slightly earlier than the 202). Server-side on both ends, so a
  busy load generator cannot skew it: the figure the target is judged on;
- answered: when the load generator saw the 202 (late when the generator itself is starved of
  CPU, which can even make it later than scored_at);
- sent: when the load generator sent the request (includes the HTTP round trip).
Target: p99 < 1 s at 2,000 events/s.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import nats
import orjson
from sqlalchemy import create_engine, text

from bench.common import (
    CpuMeter,
    IngestProcess,
    Provisioned,
    Spread,
    new_tag,
    percentile,
    progress,
    provisioned,
    run_load,
    server_pids,
    start_worker,
    stop_process,
    tail,
)
from gamify.settings import Servers

TARGET_P99_SECONDS = 1.0
BATCH = 20
USERS = 5000


@dataclass(frozen=True)
class LatencyConfig:
    runs: int = 5
    rate: float = 2000.0
    seconds: float = 30.0
    settle_timeout: float = 120.0


@dataclass
class LatencyResults:
    config: LatencyConfig
    # Seconds. accept = the event's receivedAt, stamped by ingest when its request arrived.
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    worst: list[float] = field(default_factory=list)
    answered_p50: list[float] = field(default_factory=list)  # 202 seen by the client -> scored
    answered_p99: list[float] = field(default_factory=list)
    send_p99: list[float] = field(default_factory=list)  # request sent -> scored
    answer_p99_ms: list[float] = field(default_factory=list)  # request sent -> 202
    offered: list[float] = field(default_factory=list)  # events/s actually sent
    # How busy each process was at this load: label -> one value per run.
    extra: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return Spread.of(self.p99).median < TARGET_P99_SECONDS


async def _wait_scored(target: Provisioned, timeout: float) -> None:
    connection = await nats.connect(target.servers.nats_url, connect_timeout=3)
    try:
        js = connection.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            info = await js.consumer_info(target.names.stream, target.names.durable)
            if info.num_pending + info.num_ack_pending == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{info.num_pending + info.num_ack_pending} events unscored after {timeout}s"
                )
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


def _scored_times(database_url: str, tag: str) -> dict[int, tuple[float, float]]:
    """Event index -> (received_at, scored_at), epoch seconds, of this run's events."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT event_id, received_at, scored_at FROM events WHERE event_id LIKE :prefix"),
                {"prefix": f"{tag}-%"},
            )
            return {
                int(event_id.rsplit("-", 1)[1]): (
                    received_at.replace(tzinfo=UTC).timestamp(),
                    scored_at.replace(tzinfo=UTC).timestamp(),
                )
                for event_id, received_at, scored_at in rows
            }
    finally:
        engine.dispose()


@dataclass
class _Latencies:
    """Per event, seconds until scored: from ingest's receivedAt, from the 202, from the send."""

    accepted: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    missing: int = 0


def _latencies(record: Path, scored: dict[int, tuple[float, float]]) -> _Latencies:
    out = _Latencies()
    for first, size, sent_at, answered_at, status in orjson.loads(record.read_bytes()):
        if status != 202:
            continue
        for event in range(first, first + size):
            if event not in scored:
                out.missing += 1
                continue
            received_at, scored_at = scored[event]
            out.accepted.append(scored_at - received_at)
            out.answered.append(scored_at - answered_at)
            out.sent.append(scored_at - sent_at)
    return out


def _send(
    ingest: IngestProcess, target: Provisioned, tag: str, events: int, rate: float, record: Path
) -> dict[str, Any]:
    args = ["open", "--url", ingest.url, "--tag", tag, "--events", str(events), "--rate", str(rate)]
    args += ["--users", str(USERS), "--batch", str(BATCH), "--record", str(record)]
    return run_load(args, target.api_key, timeout=events / rate + 120)


async def run(config: LatencyConfig, servers: Servers, workdir: Path) -> LatencyResults:
    results = LatencyResults(config)
    async with provisioned("latency", servers, workdir) as target:
        ingest = IngestProcess.start(target, workdir / f"{target.program.name}-ingest.log")
        worker_log = workdir / f"{target.program.name}-scoring.log"
        worker = start_worker(target, worker_log)
        try:
            # Warm-up: both processes connected, pools open, code paths hot.
            _send(ingest, target, new_tag(), int(config.rate * 2), config.rate, workdir / "warmup.json")
            await _wait_scored(target, config.settle_timeout)
            progress("latency", "warm-up done: ingest and worker scoring")
            events = int(config.rate * config.seconds)
            for index in range(config.runs):
                tag = new_tag()
                record = workdir / f"latency-{tag}.json"
                meter = CpuMeter({"ingest": ingest.proc.pid, "worker": worker.pid, **server_pids()}).start()
                sent = _send(ingest, target, tag, events, config.rate, record)
                await _wait_scored(target, config.settle_timeout)
                used = meter.stop()
                for name, seconds in used.items():
                    results.extra[f"{name}: cores busy"].append(seconds / float(sent["seconds"]))
                if worker.poll() is not None:
                    raise RuntimeError(f"the scoring worker exited:\n{tail(worker_log)}")
                scored = await asyncio.to_thread(_scored_times, target.result.database_url, tag)
                times = _latencies(record, scored)
                missing = times.missing
                if not times.accepted:
                    raise RuntimeError(f"run {index + 1}: no event was both accepted and scored")
                if missing or sent["accepted"] != events or sent["statuses"] != {"202": sent["requests"]}:
                    results.problems.append(
                        f"run {index + 1}: {sent['accepted']} of {events} accepted "
                        f"(statuses {sent['statuses']}), {missing} accepted but not scored"
                    )
                if sent["late_sends"]:
                    results.problems.append(
                        f"run {index + 1}: the sender fell >50 ms behind its schedule "
                        f"{sent['late_sends']} times"
                    )
                results.p50.append(percentile(times.accepted, 50))
                results.p99.append(percentile(times.accepted, 99))
                results.worst.append(max(times.accepted))
                results.answered_p50.append(percentile(times.answered, 50))
                results.answered_p99.append(percentile(times.answered, 99))
                results.send_p99.append(percentile(times.sent, 99))
                results.answer_p99_ms.append(float(sent["request_p99_ms"]))
                results.offered.append(float(sent["offered_per_second"]))
                progress(
                    "latency",
                    f"run {index + 1}/{config.runs}: {sent['offered_per_second']:,.0f} ev/s offered for "
                    f"{sent['offered_seconds']:.0f}s; accept->scored p50 {results.p50[-1] * 1000:,.0f} ms, "
                    f"p99 {results.p99[-1] * 1000:,.0f} ms, max {results.worst[-1] * 1000:,.0f} ms",
                )
        finally:
            stop_process(worker)
            ingest.stop()
    return results
