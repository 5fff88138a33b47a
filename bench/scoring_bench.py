"""Benchmark 2: events/s one scoring worker scores, next to a raw bulk insert of its rows.

Per run: a fresh program; its stream is pre-loaded with N events over 5,000 users (published
straight to JetStream, as ingest would); then one worker (`python -m gamify.scoring`, as
deployed) drains it. The rate is timed on the consumer itself, from the first acknowledged
event to the last, so the worker's start-up (imports, connections) is not counted. Then the
very `events` and `ledger` rows the worker wrote are inserted again, with PyMySQL alone, into
empty tables of another schema, one transaction per worker batch.
Target: scoring >= 40% of the raw insert rate.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nats

from bench.baselines import InsertResult, raw_insert, raw_publish, read_scored_rows
from bench.common import (
    CpuMeter,
    Provisioned,
    Spread,
    count_scored,
    make_events,
    new_tag,
    progress,
    provisioned,
    server_pids,
    start_worker,
    stop_process,
    stream_payloads,
    tail,
)
from gamify.credentials import generate_password
from gamify.naming import ProgramNames
from gamify.provisioning import mysql as program_schema
from gamify.settings import Servers

TARGET_RATIO = 0.40
USERS = 5000
POLL_SECONDS = 0.05


def worker_batch_size() -> int:
    """Events per transaction of the worker, read as `python -m gamify.scoring` reads it (the raw
    insert uses the same)."""
    from gamify.scoring.worker import DEFAULT_BATCH_SIZE

    return int(os.environ.get("GAMIFY_SCORING_BATCH") or DEFAULT_BATCH_SIZE)


@dataclass(frozen=True)
class ScoringConfig:
    runs: int = 5
    events: int = 50_000
    drain_timeout: float = 300.0


@dataclass
class ScoringResults:
    config: ScoringConfig
    batch_size: int = 0
    scoring: list[float] = field(default_factory=list)  # events/s
    raw: list[float] = field(default_factory=list)  # events/s (with their ledger rows)
    ratios: list[float] = field(default_factory=list)
    ledger_rows: list[int] = field(default_factory=list)
    # Where the CPU goes: label -> one value per run.
    extra: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> Spread:
        return Spread.of(self.ratios)

    @property
    def met(self) -> bool:
        return self.ratio.median >= TARGET_RATIO


@dataclass(frozen=True)
class Drain:
    events: int  # acknowledged between the first and the last observation
    seconds: float
    cpu: dict[str, float]  # CPU seconds of the worker and the servers over the same span

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


async def _unacked(js: nats.js.JetStreamContext, names: ProgramNames) -> int:
    info = await js.consumer_info(names.stream, names.durable)
    return int(info.num_pending + info.num_ack_pending)


async def drain_with_one_worker(target: Provisioned, total: int, log_path: Path, timeout: float) -> Drain:
    """Start one worker, time it from the first acknowledged event to an empty consumer."""
    connection = await nats.connect(target.servers.nats_url, connect_timeout=3)
    worker = start_worker(target, log_path)
    meter = CpuMeter({"worker": worker.pid, **server_pids()}, alone={"worker main": worker.pid})
    try:
        js = connection.jetstream()
        deadline = time.monotonic() + timeout
        first: tuple[float, int] | None = None
        while True:
            left = await _unacked(js, target.names)
            now = time.perf_counter()
            if first is None and left < total:
                first = (now, left)
                meter.start()
            if left == 0 and first is not None:
                return Drain(first[1], now - first[0], meter.stop())
            if worker.poll() is not None:
                raise RuntimeError(f"the scoring worker exited ({worker.returncode}):\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left} events still unscored after {timeout:.0f}s:\n{tail(log_path)}")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        stop_process(worker)
        await connection.close()


def _record_cpu(
    extra: dict[str, list[float]], drain: Drain, inserted: InsertResult, raw_used: dict[str, float]
) -> None:
    """CPU milliseconds per 1,000 events (= microseconds per event), and cores kept busy."""

    def per_thousand(cpu_seconds: float, events: int) -> float:
        return cpu_seconds / events * 1_000_000

    extra["worker: CPU ms per 1,000 events"].append(per_thousand(drain.cpu["worker"], drain.events))
    main = per_thousand(drain.cpu["worker main"], drain.events)
    extra["worker main process (NATS): CPU ms per 1,000 events"].append(main)
    extra["worker lane processes (scoring): CPU ms per 1,000 events"].append(
        per_thousand(drain.cpu["worker"], drain.events) - main
    )
    extra["worker: cores busy"].append(drain.cpu["worker"] / drain.seconds)
    extra["raw insert (driver): CPU ms per 1,000 events"].append(
        per_thousand(inserted.cpu_seconds, inserted.events)
    )
    if "mariadb" in raw_used:
        extra["MariaDB: CPU ms per 1,000 events, worker"].append(
            per_thousand(drain.cpu["mariadb"], drain.events)
        )
        extra["MariaDB: CPU ms per 1,000 events, raw insert"].append(
            per_thousand(raw_used["mariadb"], inserted.events)
        )
        extra["MariaDB: cores busy, worker"].append(drain.cpu["mariadb"] / drain.seconds)
        extra["MariaDB: cores busy, raw insert"].append(raw_used["mariadb"] / inserted.seconds)
    if "nats" in raw_used:
        nats_cpu = per_thousand(drain.cpu["nats"], drain.events)
        extra["nats-server: CPU ms per 1,000 events, worker"].append(nats_cpu)


async def run(config: ScoringConfig, servers: Servers, workdir: Path) -> ScoringResults:
    results = ScoringResults(config, batch_size=worker_batch_size())
    raw_names = ProgramNames(f"bench-raw-{new_tag()}")
    raw_url = await asyncio.to_thread(
        program_schema.ensure_schema, servers.mysql_admin_url, raw_names, generate_password()
    )
    try:
        for index in range(config.runs):
            async with provisioned("scoring", servers, workdir) as target:
                payloads = stream_payloads(make_events(config.events, USERS, new_tag(), seed=index))
                loaded = await raw_publish(servers.nats_url, target.names, payloads)
                progress(
                    "scoring", f"run {index + 1}/{config.runs}: stream pre-loaded with {loaded.events:,}"
                )
                log_path = workdir / f"{target.program.name}-scoring.log"
                drain = await drain_with_one_worker(target, config.events, log_path, config.drain_timeout)
                scored = await asyncio.to_thread(count_scored, target.result.database_url)
                if scored != config.events:
                    results.problems.append(f"run {index + 1}: {scored} of {config.events} events scored")
                rows = await asyncio.to_thread(
                    read_scored_rows, target.result.database_url, results.batch_size
                )
            raw_meter = CpuMeter(server_pids()).start()
            inserted = await asyncio.to_thread(raw_insert, raw_url, rows)
            raw_used = raw_meter.stop()
            _record_cpu(results.extra, drain, inserted, raw_used)
            results.scoring.append(drain.per_second)
            results.raw.append(inserted.per_second)
            results.ratios.append(drain.per_second / inserted.per_second)
            results.ledger_rows.append(inserted.ledger)
            progress(
                "scoring",
                f"run {index + 1}/{config.runs}: worker {drain.per_second:,.0f} ev/s, raw insert "
                f"{inserted.per_second:,.0f} ev/s (+{inserted.ledger:,} ledger rows), "
                f"ratio {drain.per_second / inserted.per_second:.0%}",
            )
    finally:
        await asyncio.to_thread(program_schema.drop_schema, servers.mysql_admin_url, raw_names)
    return results
