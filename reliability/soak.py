"""The soak test: the real pipeline under a steady load for N minutes, watched for slow leaks.

    .venv/bin/python -m reliability.soak --minutes 10 --json /tmp/soak.json
    .venv/bin/python -m reliability.soak --minutes 1          # a smoke run
    .venv/bin/python -m reliability.soak --out docs/RELIABILITY.md   # fills the page's soak section

Against the servers of the environment (GAMIFY_NATS_URL, GAMIFY_MYSQL_URL) it provisions one
program with a unique id, runs one ingest process, one scoring worker and one periodic snapshot
writer exactly as deployed, and sends a steady open-loop load (bench/load.py: 500 events/s in
batches of 50 by default). Every ~10 s it samples each process from /proc: resident memory,
open file descriptors and TCP sockets. After the load it waits for scoring to drain, then
computes accept->scored latency per interval (ingest's receivedAt to the events row's
scored_at, as bench/latency_bench.py does) and reconciles every accepted event against the
events table and the ledger.

Verdicts: per process, after a warm-up (the first third of the run, and at least two snapshot
intervals) the rest is split in two halves: memory flat (the later half's median RSS within
10% + 8 MiB of the earlier half's), file descriptors and TCP sockets not growing (same
comparison, a few handles of slack); a run too short for two samples per half leaves these
"not judged" (a 1-minute smoke run). Then: no interval's p99 above the bound; every request
answered 202; every accepted event scored exactly once. Prints a markdown section, writes the
results as JSON with --json, and exits 1 when a judged verdict fails (2 when the soak could not
run). The program's stream, schema, user and files are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import orjson
from bench.common import (
    PYTHON,
    CpuMeter,
    IngestProcess,
    Provisioned,
    load_average,
    new_tag,
    percentile,
    process_tree,
    progress,
    provisioned,
    run_load,
    start_process,
    start_worker,
    stop_process,
    tail,
)
from bench.latency_bench import _scored_times, _wait_scored  # drain wait; (receivedAt, scored_at)
from sqlalchemy import create_engine, text

from gamify.logs import configure_logging
from gamify.settings import Servers
from reliability.report import with_section

PROCESSES = ("ingest", "scoring", "snapshots")
SPARK_MARKS = "▁▂▃▄▅▆▇█"
LOAD_START_TIMEOUT = 120.0  # the load generator builds all its events before it sends
# A latency spike is put next to a snapshot run that started this long before its interval
# (a run takes a few seconds; its last phase marks the published users in the database).
SNAPSHOT_REACH_SECONDS = 5.0
MIN_JUDGED_SAMPLES = 2  # per half: fewer and a process's trend is not judged


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    rate: float = 500.0  # events per second, offered on a fixed schedule
    batch: int = 50  # events per request
    users: int = 5000
    sample_seconds: float = 10.0
    snapshot_interval: float = 30.0  # seconds between the snapshot writer's runs
    p99_bound_seconds: float = 1.0  # no interval's accept->scored p99 above this
    memory_ratio: float = 0.10  # later median RSS <= earlier median * (1 + ratio) + slack
    memory_slack_mib: float = 8.0
    handle_slack: int = 4  # fds and TCP sockets: later median <= earlier median + slack
    settle_timeout: float = 180.0  # for scoring to drain after the load

    @property
    def events(self) -> int:
        return int(self.rate * self.minutes * 60)


@dataclass
class ProcessSample:
    rss_mib: float
    fds: int
    tcp: int  # TCP sockets the process holds (any state: a CLOSE_WAIT leak counts)


@dataclass
class LatencyWindow:
    """Accept->scored latency of the accepted events ingest received in [start, end) seconds."""

    start: float
    end: float
    events: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class Sample:
    seconds: float  # since the load started
    processes: dict[str, ProcessSample | None]  # None: the process was gone
    latency: LatencyWindow | None = None  # the interval that ends with this sample


@dataclass
class Reconciliation:
    sent: int = 0  # events the generator offered
    accepted: int = 0  # events in requests answered 202 (minus duplicates and rejects)
    scored: int = 0  # accepted events found in the events table
    lost: int = 0  # accepted but never scored
    scored_unconfirmed: int = 0  # scored, but the client never saw the 202 (not a loss)
    double_counted: int = 0  # (event, rule) pairs the ledger holds more than once
    totals_off: int = 0  # users whose points differ from their ledger's sum
    snapshots_published: int = 0


@dataclass
class Verdict:
    subject: str
    check: str
    ok: bool
    detail: str
    judged: bool = True  # False: the run was too short to say (ok is then meaningless)


@dataclass
class SoakResults:
    config: SoakConfig
    program: str = ""
    date: str = ""
    load_before: str = ""
    load_after: str = ""
    samples: list[Sample] = field(default_factory=list)
    minutes: list[LatencyWindow] = field(default_factory=list)
    reconciliation: Reconciliation = field(default_factory=Reconciliation)
    load: dict[str, Any] = field(default_factory=dict)  # the load generator's summary
    cores_busy: dict[str, float] = field(default_factory=dict)  # CPU seconds / wall seconds
    snapshot_runs: list[float] = field(default_factory=list)  # when each run started (s since load start)
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        judged = [verdict for verdict in self.verdicts if verdict.judged]
        return bool(judged) and all(verdict.ok for verdict in judged)

    def to_json(self) -> bytes:
        return orjson.dumps({**dataclasses.asdict(self), "ok": self.ok}, option=orjson.OPT_INDENT_2)


# -- sampling /proc -----------------------------------------------------------------------------


def _tcp_inodes(pid: int) -> set[str]:
    """Inodes of every TCP socket in the process's network namespace (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                columns = line.split()
                if len(columns) > 9:
                    inodes.add(columns[9])
    return inodes


def sample_process(pid: int) -> ProcessSample | None:
    """RSS, open fds and TCP sockets of one live process and its descendants (the scoring
    worker's lane processes) summed; None when it is gone."""
    root = _sample_one(pid)
    if root is None:
        return None
    others = [sample for child in process_tree(pid)[1:] if (sample := _sample_one(child)) is not None]
    return ProcessSample(
        rss_mib=root.rss_mib + sum(s.rss_mib for s in others),
        fds=root.fds + sum(s.fds for s in others),
        tcp=root.tcp + sum(s.tcp for s in others),
    )


def _sample_one(pid: int) -> ProcessSample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fd_dir = Path(f"/proc/{pid}/fd")
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").split()[:1] == ["Z"]:  # exited, not yet reaped: it holds nothing
        return None
    rss_kib = int(fields.get("VmRSS", "0 kB").split()[0])
    sockets = set()
    for fd in fds:
        with contextlib.suppress(OSError):  # closed between listing and reading
            target = os.readlink(fd_dir / fd)
            if target.startswith("socket:["):
                sockets.add(target[len("socket:[") : -1])
    return ProcessSample(rss_mib=rss_kib / 1024, fds=len(fds), tcp=len(sockets & _tcp_inodes(pid)))


# -- latency per interval -------------------------------------------------------------------------


def latency_windows(
    edges: Sequence[float], times: Sequence[tuple[float, float]], origin: float
) -> list[LatencyWindow]:
    """Split (received, scored) epoch pairs into windows ending at `edges` (seconds after
    `origin`, ascending). Events before the first edge go to the first window, after the last
    to the last."""
    buckets: list[list[float]] = [[] for _ in edges]
    for received, scored in times:
        index = min(bisect.bisect_left(edges, received - origin), len(edges) - 1)
        buckets[index].append(scored - received)
    windows = []
    for index, (end, latencies) in enumerate(zip(edges, buckets, strict=True)):
        window = LatencyWindow(start=edges[index - 1] if index else 0.0, end=end, events=len(latencies))
        if latencies:
            window.p50_ms = percentile(latencies, 50) * 1000
            window.p99_ms = percentile(latencies, 99) * 1000
        windows.append(window)
    return windows


def minute_edges(duration: float) -> list[float]:
    """Whole minutes, then the last partial one: [60, 120, ..., duration]."""
    edges = [60.0 * minute for minute in range(1, int(duration // 60) + 1)]
    if not edges or duration - edges[-1] > 1.0:
        edges.append(duration)
    return edges


# -- verdicts (pure) ------------------------------------------------------------------------------


def judged_spans(config: SoakConfig, seconds: Sequence[float]) -> tuple[list[int], list[int], float]:
    """Indexes of the samples compared, earlier and later, and the warm-up they follow.

    Warm-up: the first third of the run, and at least two snapshot intervals (the snapshot
    writer's first full run comes one interval in and sets its working size). The rest is split
    in two halves by time."""
    if not seconds:
        return [], [], 0.0
    end = seconds[-1]
    warmup = max(end / 3, 2 * config.snapshot_interval)
    middle = (warmup + end) / 2
    earlier = [index for index, at in enumerate(seconds) if warmup <= at < middle]
    later = [index for index, at in enumerate(seconds) if at >= middle]
    return earlier, later, warmup


def not_growing(
    earlier: Sequence[float], later: Sequence[float], ratio: float, slack: float
) -> tuple[bool, float, float]:
    """Whether the later median stays within `ratio` and `slack` of the earlier one; also both."""
    before, after = statistics.median(earlier), statistics.median(later)
    return after <= before * (1 + ratio) + slack, before, after


def process_verdicts(config: SoakConfig, samples: Sequence[Sample]) -> list[Verdict]:
    seconds = [sample.seconds for sample in samples]
    earlier, later, warmup = judged_spans(config, seconds)
    verdicts = []
    for name in PROCESSES:
        seen = [sample.processes.get(name) for sample in samples]
        if not seen or any(point is None for point in seen):
            gone = sum(point is None for point in seen)
            verdicts.append(
                Verdict(name, "stayed up", False, f"{len(seen)} samples, process gone in {gone} of them")
            )
            continue
        if len(earlier) < MIN_JUDGED_SAMPLES or len(later) < MIN_JUDGED_SAMPLES:
            detail = f"{seconds[-1]:.0f} s of samples: too short after a {warmup:.0f} s warm-up"
            verdicts.append(Verdict(name, "memory, fds, TCP sockets", True, detail, judged=False))
            continue
        points = [point for point in seen if point is not None]
        checks: list[tuple[str, Callable[[ProcessSample], float], float, float, str]] = [
            ("memory flat", lambda p: p.rss_mib, config.memory_ratio, config.memory_slack_mib, " MiB"),
            ("fds not growing", lambda p: p.fds, 0.0, config.handle_slack, ""),
            ("TCP sockets not growing", lambda p: p.tcp, 0.0, config.handle_slack, ""),
        ]
        spans = (
            f"{seconds[earlier[0]]:.0f}-{seconds[earlier[-1]]:.0f} s",
            f"{seconds[later[0]]:.0f}-{seconds[later[-1]]:.0f} s",
        )
        for check, value, ratio, slack, unit in checks:
            values = [value(point) for point in points]
            ok, before, after = not_growing(
                [values[i] for i in earlier], [values[i] for i in later], ratio, slack
            )
            detail = f"median {before:.1f}{unit} at {spans[0]} -> {after:.1f}{unit} at {spans[1]}"
            verdicts.append(Verdict(name, check, ok, detail))
    return verdicts


def near_snapshot(window: LatencyWindow, snapshot_runs: Sequence[float]) -> bool:
    """Whether a snapshot run started during the interval or just before it."""
    return any(window.start - SNAPSHOT_REACH_SECONDS <= run <= window.end for run in snapshot_runs)


def latency_verdict(
    config: SoakConfig, samples: Sequence[Sample], snapshot_runs: Sequence[float] = ()
) -> Verdict:
    measured = [s.latency for s in samples if s.latency is not None and s.latency.p99_ms is not None]
    bound_ms = config.p99_bound_seconds * 1000
    if not measured:
        return Verdict("pipeline", "p99 stable", False, "no interval had scored events")
    worst = max(measured, key=lambda window: window.p99_ms or 0.0)
    over = [window for window in measured if (window.p99_ms or 0.0) > bound_ms]
    detail = (
        f"{len(measured)} intervals; worst p99 {worst.p99_ms:,.0f} ms at "
        f"{worst.start:.0f}-{worst.end:.0f} s; {len(over)} above {bound_ms:,.0f} ms"
    )
    if over:
        during = sum(near_snapshot(window, snapshot_runs) for window in over)
        detail += f" ({during} of them with a snapshot run)"
    return Verdict("pipeline", "p99 stable", not over, detail)


def delivery_verdicts(config: SoakConfig, load: dict[str, Any], counts: Reconciliation) -> list[Verdict]:
    statuses = load.get("statuses", {})
    requests = int(load.get("requests", 0))
    answered = statuses.get("202", 0) == requests and requests > 0
    return [
        Verdict(
            "pipeline",
            "every request answered 202",
            answered and counts.accepted == counts.sent,
            f"{requests:,} requests, statuses {statuses}; {counts.accepted:,} of {counts.sent:,} "
            "events accepted",
        ),
        Verdict(
            "pipeline",
            "accepted events scored exactly once",
            counts.lost == 0 and counts.double_counted == 0 and counts.totals_off == 0 and counts.scored > 0,
            f"{counts.scored:,} of {counts.accepted:,} scored, {counts.lost} lost, "
            f"{counts.double_counted} double-counted, {counts.totals_off} users' totals off their ledger",
        ),
    ]


def judge(results: SoakResults) -> list[Verdict]:
    config = results.config
    return [
        *process_verdicts(config, results.samples),
        latency_verdict(config, results.samples, results.snapshot_runs),
        *delivery_verdicts(config, results.load, results.reconciliation),
    ]


# -- the run ------------------------------------------------------------------------------------


async def _wait_for_load(target: Provisioned, load: asyncio.Future[Any]) -> float:
    """The epoch time the first events reached the stream (the generator prepares first)."""
    connection = await nats.connect(target.servers.nats_url, connect_timeout=3)
    try:
        js = connection.jetstream()
        deadline = time.monotonic() + LOAD_START_TIMEOUT
        while time.monotonic() < deadline:
            if (await js.stream_info(target.names.stream)).state.messages > 0:
                return time.time()
            if load.done():
                load.result()  # raises the generator's failure
                raise RuntimeError("the load generator finished before any event reached the stream")
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no event reached the stream within {LOAD_START_TIMEOUT:.0f}s")
    finally:
        await connection.close()


def _accepted_indexes(record: Path) -> set[int]:
    """Indexes of the events in requests answered 202 (the generator's own record)."""
    accepted: set[int] = set()
    for first, size, _sent, _answered, status in orjson.loads(record.read_bytes()):
        if status == 202:
            accepted.update(range(first, first + size))
    return accepted


def _ledger_checks(database_url: str) -> tuple[int, int, list[float]]:
    """(event, rule) pairs awarded more than once; users whose points are not their ledger's
    awards; when each snapshot run started (epoch seconds)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            doubled = connection.execute(
                text(
                    "SELECT COUNT(*) FROM (SELECT event_id, rule_id FROM ledger WHERE kind = 'award' "
                    "GROUP BY event_id, rule_id HAVING COUNT(*) > 1) AS doubled"
                )
            ).scalar_one()
            totals_off = connection.execute(
                text(
                    "SELECT COUNT(*) FROM users u LEFT JOIN (SELECT user_id, SUM(points) AS earned "
                    "FROM ledger WHERE kind = 'award' GROUP BY user_id) l ON l.user_id = u.user_id "
                    "WHERE u.points <> COALESCE(l.earned, 0)"
                )
            ).scalar_one()
            started = connection.execute(text("SELECT generated_at FROM snapshot_runs ORDER BY version"))
            snapshots = [at.replace(tzinfo=UTC).timestamp() for (at,) in started]  # stored as UTC
    finally:
        engine.dispose()
    return int(doubled), int(totals_off), snapshots


def _start_snapshots(target: Provisioned, interval: float, log_path: Path) -> subprocess.Popen[bytes]:
    """The snapshot writer in periodic mode, as `gamify local up` runs it."""
    env = {**target.service_env(), "GAMIFY_SNAPSHOT_INTERVAL": str(interval)}
    return start_process([PYTHON, "-m", "gamify.snapshots"], env, log_path)


def _progress_line(sample: Sample) -> str:
    parts = []
    for name in PROCESSES:
        point = sample.processes.get(name)
        parts.append(
            f"{name} gone"
            if point is None
            else f"{name} {point.rss_mib:.0f} MiB/{point.fds} fd/{point.tcp} tcp"
        )
    return f"t={sample.seconds:4.0f}s " + ", ".join(parts)


async def run(config: SoakConfig, servers: Servers, workdir: Path) -> SoakResults:
    """Provision, run the processes under load for `config.minutes`, sample, reconcile, judge;
    everything provisioned is deleted afterwards. Service logs stay in `workdir`."""
    results = SoakResults(
        config, date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), load_before=load_average()
    )
    async with provisioned("soak", servers, workdir) as target:
        results.program = target.program.name
        name = target.program.name
        ingest = IngestProcess.start(target, workdir / f"{name}-ingest.log")
        logs = {"ingest": ingest.log_path, "scoring": workdir / f"{name}-scoring.log"}
        logs["snapshots"] = workdir / f"{name}-snapshots.log"
        worker = start_worker(target, logs["scoring"])
        snapshots = _start_snapshots(target, config.snapshot_interval, logs["snapshots"])
        pids = {"ingest": ingest.proc.pid, "scoring": worker.pid, "snapshots": snapshots.pid}
        tag, record = new_tag(), workdir / "soak-requests.json"
        args = ["open", "--url", ingest.url, "--tag", tag, "--events", str(config.events)]
        args += ["--rate", str(config.rate), "--batch", str(config.batch), "--users", str(config.users)]
        args += ["--record", str(record)]
        try:
            progress("soak", f"{name}: {config.events:,} events at {config.rate:,.0f}/s, sampling")
            load = asyncio.ensure_future(
                asyncio.to_thread(run_load, args, target.api_key, config.minutes * 60 + 300)
            )
            origin = await _wait_for_load(target, load)
            meter = CpuMeter(pids).start()
            for tick in itertools.count():
                due = origin + tick * config.sample_seconds
                await asyncio.wait({load}, timeout=max(0.0, due - time.time()))
                now = time.time()
                since_last = now - origin - results.samples[-1].seconds if results.samples else now
                if load.done() and since_last < config.sample_seconds / 2:
                    break  # the last scheduled sample is recent: no near-empty final interval
                sample = Sample(now - origin, {p: sample_process(pid) for p, pid in pids.items()})
                results.samples.append(sample)
                if tick % 6 == 0 or load.done():  # about once a minute, and the last one
                    progress("soak", _progress_line(sample))
                if load.done():
                    break
            results.cores_busy = {p: s / (time.time() - origin) for p, s in meter.stop().items()}
            results.load = load.result()
            progress("soak", f"load done: {results.load['accepted']:,} accepted; waiting for scoring")
            await _wait_scored(target, config.settle_timeout)
        finally:
            stop_process(snapshots)
            stop_process(worker)
            ingest.stop()
        for process, path in logs.items():
            if results.samples[-1].processes.get(process) is None:
                progress("soak", f"{process} exited during the soak; its log ends:\n{tail(path)}")
        scored = await asyncio.to_thread(_scored_times, target.result.database_url, tag)
        accepted = _accepted_indexes(record)
        counts = results.reconciliation
        counts.sent = config.events
        counts.accepted = int(results.load.get("accepted", 0))  # ingest's own count, from the 202s
        counts.scored = len(accepted & scored.keys())
        counts.lost = len(accepted - scored.keys())
        counts.scored_unconfirmed = len(scored.keys() - accepted)
        doubled, totals_off, runs = await asyncio.to_thread(_ledger_checks, target.result.database_url)
        counts.double_counted, counts.totals_off, counts.snapshots_published = doubled, totals_off, len(runs)
        results.snapshot_runs = [run - origin for run in runs]
        times = [scored[index] for index in accepted if index in scored]
        edges = [sample.seconds for sample in results.samples[1:]] or [results.samples[-1].seconds]
        for sample, window in zip(results.samples[1:], latency_windows(edges, times, origin), strict=False):
            sample.latency = window
        results.minutes = latency_windows(minute_edges(results.samples[-1].seconds), times, origin)
    results.load_after = load_average()
    results.verdicts = judge(results)
    return results


# -- the report ---------------------------------------------------------------------------------


def sparkline(values: Sequence[float]) -> str:
    """One mark per value, scaled between the series' min and max (flat when they are equal)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    if span <= 0:
        return SPARK_MARKS[0] * len(values)
    top = len(SPARK_MARKS) - 1
    return "".join(SPARK_MARKS[round((value - low) / span * top)] for value in values)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _cell(point: ProcessSample | None) -> str:
    return "gone" if point is None else f"{point.rss_mib:.1f} · {point.fds} · {point.tcp}"


def render(results: SoakResults) -> str:
    """A markdown section: settings, samples per minute, RSS sparklines, verdicts."""
    config, counts, load = results.config, results.reconciliation, results.load
    lines = [
        f"## Soak: {config.minutes:g} minute{'' if config.minutes == 1 else 's'} at "
        f"{config.rate:,.0f} events/s",
        "",
        f"{results.date}, program `{results.program}` (deleted afterwards). One ingest process, one "
        f"scoring worker and one snapshot writer (every {config.snapshot_interval:g} s), started as "
        "deployed, against the shared NATS JetStream and MariaDB. Load: bench/load.py open loop, "
        f"batches of {config.batch} every {config.batch / config.rate * 1000:,.0f} ms, "
        f"{config.users:,} users; sampled every {config.sample_seconds:g} s from /proc. "
        f"Load average before {results.load_before}, after {results.load_after}.",
        "",
        f"Offered {load.get('offered_per_second', 0.0):,.0f} events/s for "
        f"{load.get('offered_seconds', 0.0):,.0f} s (sender late {load.get('late_sends', 0)} times); "
        f"request p50 {_ms(load.get('request_p50_ms'))} ms, p99 {_ms(load.get('request_p99_ms'))} ms. "
        "CPU (cores busy): "
        + ", ".join(f"{name} {busy:.2f}" for name, busy in results.cores_busy.items())
        + ".",
        "",
        "Per minute: each process's RSS (MiB) · open fds · TCP sockets at the minute's last "
        "sample (scoring: the worker and its two lane processes together); accept->scored latency "
        "(ingest's receivedAt to the events row's scored_at) of the events received in that minute.",
        "",
        "| time | " + " | ".join(PROCESSES) + " | events | p50 ms | p99 ms |",
        "|---|" + "---|" * len(PROCESSES) + "---:|---:|---:|",
    ]
    for window in results.minutes:
        at = [sample for sample in results.samples if sample.seconds <= window.end + 0.5]
        last = at[-1] if at else None
        cells = [_cell(last.processes.get(name)) if last else "-" for name in PROCESSES]
        lines.append(
            f"| {_clock(window.end)} | " + " | ".join(cells) + f" | {window.events:,} | "
            f"{_ms(window.p50_ms)} | {_ms(window.p99_ms)} |"
        )
    lines += ["", "RSS per sample (scaled from min to max):", "", "```"]
    for name in PROCESSES:
        rss = [point.rss_mib for s in results.samples if (point := s.processes.get(name)) is not None]
        if rss:
            lines.append(f"{name:<10} {sparkline(rss)}  {min(rss):.1f} to {max(rss):.1f} MiB")
    windows = [s.latency for s in results.samples if s.latency and s.latency.p99_ms is not None]
    if windows:
        p99s = [window.p99_ms or 0.0 for window in windows]
        lines.append(f"{'p99':<10} {sparkline(p99s)}  {min(p99s):,.0f} to {max(p99s):,.0f} ms")
        runs = results.snapshot_runs
        marks = "".join("^" if any(w.start <= run < w.end for run in runs) else " " for w in windows)
        lines.append(f"{'snapshot':<10} {marks}  (^: a snapshot run started in that interval)")
    lines += [
        "```",
        "",
        f"Events: {counts.sent:,} sent, {counts.accepted:,} accepted, {counts.scored:,} scored, "
        f"**{counts.lost} lost**, **{counts.double_counted} double-counted**, "
        f"{counts.scored_unconfirmed} scored without a 202 seen by the client; "
        f"{counts.snapshots_published} snapshots published.",
        "",
        "| process | check | verdict | detail |",
        "|---|---|---|---|",
    ]
    for verdict in results.verdicts:
        mark = "not judged" if not verdict.judged else "pass" if verdict.ok else "**FAIL**"
        lines.append(f"| {verdict.subject} | {verdict.check} | {mark} | {verdict.detail} |")
    lines += [
        "",
        f"Overall: **{'pass' if results.ok else 'FAIL'}**. Rules: after a warm-up (the first third of "
        f"the run, and at least two snapshot intervals), the rest is split in two halves; memory flat = "
        f"the later half's median RSS <= the earlier half's x {1 + config.memory_ratio:g} + "
        f"{config.memory_slack_mib:g} MiB; fds and TCP sockets: later median <= earlier median + "
        f"{config.handle_slack}; p99 stable = no {config.sample_seconds:g}-s interval above "
        f"{config.p99_bound_seconds * 1000:,.0f} ms.",
        "",
    ]
    return "\n".join(lines)


# -- the command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reliability.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = SoakConfig()
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="events per second")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="events per request")
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--sample-seconds", type=float, default=defaults.sample_seconds)
    parser.add_argument("--snapshot-interval", type=float, default=defaults.snapshot_interval)
    parser.add_argument("--p99-bound", type=float, default=defaults.p99_bound_seconds, help="seconds")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (service logs)")
    parser.add_argument(
        "--out", type=Path, help="write the report into this page's soak section (RELIABILITY.md)"
    )
    args = parser.parse_args(argv)
    config = SoakConfig(
        minutes=args.minutes,
        rate=args.rate,
        batch=args.batch,
        users=args.users,
        sample_seconds=args.sample_seconds,
        snapshot_interval=args.snapshot_interval,
        p99_bound_seconds=args.p99_bound,
    )
    configure_logging("WARNING", service="soak")  # progress lines only, not provisioning chatter
    workdir = Path(tempfile.mkdtemp(prefix="gamify-soak-"))
    try:
        results = asyncio.run(run(config, Servers.from_env(), workdir))
    except Exception as exc:
        traceback.print_exc()
        progress("soak", f"could not run: {type(exc).__name__}: {exc}; service logs in {workdir}")
        return 2
    report = render(results)
    if args.out:
        page = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(with_section(page, "soak", report))
        progress("soak", f"section written to {args.out}")
    else:
        print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(results.to_json())
    if args.keep or not results.ok:
        progress("soak", f"service logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(main())
