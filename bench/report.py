"""Render docs/BENCHMARKS.md from the measured results and the hand-written analysis notes.

Numbers (machine, tables, per-run values) come from the run; the "what limits it" text comes
from bench/analysis/<benchmark>.md, written from profiles of these services.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import Spread
from bench.ingest_bench import TARGET_RATIO as INGEST_TARGET
from bench.ingest_bench import IngestResults
from bench.latency_bench import TARGET_P99_SECONDS, LatencyResults
from bench.scoring_bench import TARGET_RATIO as SCORING_TARGET
from bench.scoring_bench import ScoringResults

ANALYSIS = Path(__file__).parent / "analysis"


@dataclass
class Report:
    date: str
    command: str
    quick: bool
    machine: dict[str, str]
    load_before: str
    load_after: str = ""
    seconds: float = 0.0
    ingest: IngestResults | None = None
    scoring: ScoringResults | None = None
    latency: LatencyResults | None = None
    failures: dict[str, str] | None = None


def _yes(met: bool) -> str:
    return "**yes**" if met else "**no**"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _pct1(value: float) -> str:
    """One decimal: a ratio next to its threshold must not round onto it."""
    return f"{value:.1%}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def _row(label: str, values: Sequence[float], show: Callable[[float], str] = _rate) -> str:
    spread = Spread.of(values)
    runs = ", ".join(show(v) for v in values)
    return f"| {label} | {show(spread.median)} | {show(spread.low)} | {show(spread.high)} | {runs} |"


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 9.5 else f"{value:.2f}"


def _cpu_table(extra: dict[str, list[float]]) -> list[str]:
    if not extra:
        return []
    return [
        "",
        "Where the CPU goes, in the same runs (CPU time from /proc: work done, not time waited; "
        "CPU ms per 1,000 events = µs per event; 1.00 core busy = one core fully used; the "
        "nats-server and MariaDB rows are the whole server's CPU, so on a shared machine they "
        "include other clients' work):",
        "",
        TABLE_HEAD,
        *(_row(label, values, _num) for label, values in extra.items()),
    ]


TABLE_HEAD = "| | median | min | max | runs |\n|---|---:|---:|---:|---|"


class _Figures(dict[str, str]):
    """Placeholders of an analysis note; an unknown one stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _med(values: Sequence[float]) -> float:
    return Spread.of(values).median if values else float("nan")


def _analysis(name: str, figures: dict[str, str]) -> str:
    """The hand-written note, with `{placeholders}` filled from this run's medians so its
    numbers agree with the tables above it."""
    path = ANALYSIS / f"{name}.md"
    if not path.exists():
        return "_(no analysis written yet)_"
    return path.read_text().strip().format_map(_Figures(figures))


def _standing(ratios: Spread, target: float) -> str:
    """How the runs sit against the target, in words (the verdict's margin, not the verdict)."""
    if ratios.low >= target:
        return f"every run is above the {target:.0%} target"
    if ratios.median >= target:
        return (
            f"the median is above the {target:.0%} target but single runs fall below it, so a "
            "noisier machine can tip the verdict"
        )
    return f"the median is below the {target:.0%} target"


def _ingest_figures(r: IngestResults) -> dict[str, str]:
    x = r.extra
    ingest_us = _med(x["ingest process: CPU ms per 1,000 events"])
    raw_us = _med(x["raw publisher: CPU ms per 1,000 events"])
    return {
        "ratio": _pct1(r.ratio.median),
        "ingest_us": f"{ingest_us:.0f}",
        "raw_us": f"{raw_us:.0f}",
        "own_us": f"{ingest_us - raw_us:.0f}",
        "cpu_ratio": _pct(_med(x["ratio of CPU per event, raw / ingest (%)"]) / 100),
        "low": _pct(r.ratio.low),
        "high": _pct(r.ratio.high),
        "standing": _standing(r.ratio, INGEST_TARGET),
        "ingest_cores": f"{_med(x['ingest process: cores busy']):.2f}",
        "raw_cores": f"{_med(x['raw publisher: cores busy']):.2f}",
        "nats_us": f"{_med(x['nats-server: CPU ms per 1,000 events, ingest']):.0f}",
        "request_p50": f"{_med(r.request_p50_ms):.0f}",
        "target_us": f"{raw_us / INGEST_TARGET:.0f}",
    }


def _scoring_figures(r: ScoringResults) -> dict[str, str]:
    x = r.extra
    db_worker = _med(x["MariaDB: CPU ms per 1,000 events, worker"])
    db_raw = _med(x["MariaDB: CPU ms per 1,000 events, raw insert"])
    worker_rate = _med(r.scoring)
    worker_us = _med(x["worker: CPU ms per 1,000 events"])
    driver_us = _med(x["raw insert (driver): CPU ms per 1,000 events"])
    # CPU per event of the whole path (client process + MariaDB), scoring vs the raw insert.
    total_us, raw_total_us = worker_us + db_worker, driver_us + db_raw
    # Results of runs before the lanes were processes have no split (the placeholders then stay).
    split = {
        name: f"{_med(x[label]):.0f}"
        for name, label in (
            ("main_us", "worker main process (NATS): CPU ms per 1,000 events"),
            ("lanes_us", "worker lane processes (scoring): CPU ms per 1,000 events"),
        )
        if x.get(label)
    }
    return {
        **split,
        "ratio": _pct(r.ratio.median),
        "total_us": f"{total_us:.0f}",
        "raw_total_us": f"{raw_total_us:.0f}",
        "cpu_ratio": _pct(raw_total_us / total_us),
        "two_core_ratio": _pct(2 * raw_total_us / total_us),
        "db_cores": f"{_med(x['MariaDB: cores busy, worker']):.2f}",
        "target_total_us": f"{2 * raw_total_us / SCORING_TARGET:.0f}",
        "worker_us": f"{_med(x['worker: CPU ms per 1,000 events']):.0f}",
        "worker_cores": f"{_med(x['worker: cores busy']):.2f}",
        "driver_us": f"{_med(x['raw insert (driver): CPU ms per 1,000 events']):.0f}",
        "db_worker_us": f"{db_worker:.0f}",
        "db_raw_us": f"{db_raw:.0f}",
        "db_factor": f"{db_worker / db_raw:.0f}",
        "db_cap": f"{1_000_000 / db_worker:,.0f}",
        "worker_wall_us": f"{1_000_000 / worker_rate:.0f}",
        "raw_wall_us": f"{1_000_000 / _med(r.raw):.0f}",
        "worker_rate": _rate(worker_rate),
        "target_rate": _rate(_med(r.raw) * SCORING_TARGET),
        "batch": str(r.batch_size),
    }


def _latency_figures(r: LatencyResults) -> dict[str, str]:
    x = r.extra
    return {
        "rate": _rate(r.config.rate),
        "p50": _ms(_med(r.p50)),
        "p99_low": _ms(min(r.p99)),
        "p99_high": _ms(max(r.p99)),
        **{
            f"{name}_cores": f"{_med(x[f'{name}: cores busy']):.2f}"
            for name in ("ingest", "worker", "nats", "mariadb")
        },
    }


def _ingest(results: IngestResults) -> list[str]:
    c = results.config
    lines = [
        "## 1. Ingest: accepted events/s of one process vs raw JetStream publishing",
        "",
        f"One ingest process (`python -m gamify.ingest`: uvicorn, uvloop, as deployed), batches of 100 "
        f"events, {c.connections} keep-alive connections from a load-generator process "
        f"(`bench/load.py`, httpx), {c.events:,} events per run, closed loop (each connection sends "
        f"its next batch when the previous one is answered). Baseline in the same run, same stream: "
        f"nats-py alone publishing the same payloads (the `StreamEvent` bytes ingest publishes, "
        f"`Nats-Msg-Id`, expected-stream header) with up to 4,096 acks in flight, from one process. "
        f"Each run measures both sides in two halves, in the order A B B A (which side starts "
        f"alternates between runs); {c.runs} runs after a warm-up.",
        "",
        TABLE_HEAD,
        _row("ingest, accepted events/s", results.ingest),
        _row("raw nats-py acked publish, events/s", results.raw),
        _row("**ratio ingest / raw**", results.ratios, _pct),
    ]
    lines += [
        _row("request latency p50 (ms, batch of 100)", results.request_p50_ms, lambda v: f"{v:,.0f}"),
        _row("request latency p99 (ms, batch of 100)", results.request_p99_ms, lambda v: f"{v:,.0f}"),
        *_cpu_table(results.extra),
        "",
        f"Target: ingest >= {INGEST_TARGET:.0%} of the raw publish rate. Median ratio "
        f"{_pct1(results.ratio.median)} (runs from {_pct(results.ratio.low)} to "
        f"{_pct(results.ratio.high)}): met {_yes(results.met)}. Cross-check from CPU time (both sides "
        f"are CPU-bound): raw / ingest CPU per event has a median of "
        f"{_med(results.extra['ratio of CPU per event, raw / ingest (%)']):.1f}%.",
        "",
        "### What limits it",
        "",
        _analysis("ingest", _ingest_figures(results)),
    ]
    return lines


def _scoring(results: ScoringResults) -> list[str]:
    c = results.config
    lines = [
        "## 2. Scoring: events/s of one worker vs a raw bulk insert of its rows",
        "",
        f"Per run a fresh program; its stream pre-loaded with {c.events:,} events over 5,000 users "
        f"(70% steps with a unit rule and a daily cap, 20% meals with a condition, 10% workouts; a "
        f"launch boost, two badges, three boards); one worker (`python -m gamify.scoring`, as deployed: "
        f"its main process and its two lane processes, CPU counted for all three) drains it, "
        f"timed on the consumer from the first acknowledged event to the last (start-up excluded). "
        f"Baseline in the same run: the very `events` and `ledger` rows that worker wrote, inserted "
        f"again with PyMySQL alone into empty tables of another schema, multi-row INSERTs, one "
        f"transaction per {results.batch_size} events (the worker's batch). {c.runs} runs.",
        "",
        TABLE_HEAD,
        _row("scoring worker, events/s", results.scoring),
        _row("raw insert of its events + ledger rows, events/s", results.raw),
        _row("**ratio scoring / raw**", results.ratios, _pct),
        _row("ledger rows per run", [float(n) for n in results.ledger_rows]),
        *_cpu_table(results.extra),
        "",
        f"Target: scoring >= {SCORING_TARGET:.0%} of the raw insert rate. Median ratio "
        f"{_pct1(results.ratio.median)} (runs from {_pct(results.ratio.low)} to "
        f"{_pct(results.ratio.high)}): met {_yes(results.met)}.",
        "",
        "### What limits it",
        "",
        _analysis("scoring", _scoring_figures(results)),
    ]
    return lines


def _latency(results: LatencyResults) -> list[str]:
    c = results.config
    p99 = Spread.of(results.p99)
    lines = [
        f"## 3. Latency: accept -> scored at {c.rate:,.0f} events/s offered",
        "",
        f"One ingest process and one scoring worker; the load generator sends a batch of 20 events "
        f"every {20 / c.rate * 1000:g} ms on a fixed schedule (open loop) for {c.seconds:g} s per run, "
        f"{c.runs} runs after a warm-up. Per event, scored = `events.scored_at` (UTC, set by MariaDB "
        f"when the worker inserts the event's row inside the batch's transaction; the rest of that "
        f"transaction and its commit, a few ms, are not counted). Accepted = `events.received_at`, "
        f"the receivedAt ingest stamps when the request arrives (just before it publishes and "
        f"answers 202): both ends are stamped server-side on this machine's clock, so a starved "
        f"load generator cannot skew them. The client's view is shown too: from the 202 it saw "
        f"(which comes late, even after scored_at, when the generator is short of CPU) and from "
        f"when it sent the request. Every accepted event must be found scored.",
        "",
        TABLE_HEAD,
        _row("offered events/s (achieved by the sender)", results.offered),
        _row("accept -> scored p50 (ms)", results.p50, _ms),
        _row("**accept -> scored p99 (ms)**", results.p99, _ms),
        _row("accept -> scored max (ms)", results.worst, _ms),
        _row("client: 202 -> scored p50 (ms)", results.answered_p50, _ms),
        _row("client: 202 -> scored p99 (ms)", results.answered_p99, _ms),
        _row("client: send -> scored p99 (ms)", results.send_p99, _ms),
        _row("client: send -> 202 p99 (ms)", results.answer_p99_ms, lambda v: f"{v:,.0f}"),
        *_cpu_table(results.extra),
        "",
        f"Target: p99 < {TARGET_P99_SECONDS * 1000:,.0f} ms at {c.rate:,.0f} events/s. Median p99 "
        f"{_ms(p99.median)} ms (worst run {_ms(p99.high)} ms); the client's send -> scored p99: median "
        f"{_ms(Spread.of(results.send_p99).median)} ms, worst run {_ms(max(results.send_p99))} ms. "
        f"Met (judged on the median of accept -> scored p99): {_yes(results.met)}.",
        "",
        "### What limits it",
        "",
        _analysis("latency", _latency_figures(results)),
    ]
    return lines


def _summary(report: Report) -> list[str]:
    lines = [
        "| benchmark | measured (median) | baseline (median) | result | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    if report.ingest is not None:
        r = report.ingest
        lines.append(
            f"| ingest, one process | {_rate(Spread.of(r.ingest).median)} ev/s | "
            f"{_rate(Spread.of(r.raw).median)} ev/s raw publish | {_pct1(r.ratio.median)} | "
            f">= {INGEST_TARGET:.0%} | {_yes(r.met)} |"
        )
    if report.scoring is not None:
        s = report.scoring
        lines.append(
            f"| scoring, one worker | {_rate(Spread.of(s.scoring).median)} ev/s | "
            f"{_rate(Spread.of(s.raw).median)} ev/s raw insert | {_pct1(s.ratio.median)} | "
            f">= {SCORING_TARGET:.0%} | {_yes(s.met)} |"
        )
    if report.latency is not None:
        lat = report.latency
        lines.append(
            f"| accept -> scored at {lat.config.rate:,.0f} ev/s | p99 {_ms(Spread.of(lat.p99).median)} ms "
            f"(p50 {_ms(Spread.of(lat.p50).median)} ms) | | client's send -> scored p99 "
            f"{_ms(Spread.of(lat.send_p99).median)} ms | p99 < {TARGET_P99_SECONDS * 1000:,.0f} ms | "
            f"{_yes(lat.met)} |"
        )
    return lines


BUSY_LOAD = 0.5  # a 1-minute load average above this before the run: something else was running


def _conditions(report: Report) -> str:
    """How quiet the machine was before the run (the benchmarks themselves raise the load)."""
    try:
        busy = float(report.load_before.split("/")[0]) > BUSY_LOAD
    except ValueError:
        busy = True
    if busy:
        return (
            "> **These numbers come from a busy, shared 2-core machine** (load average "
            f"{report.load_before} before the run, 1/5/15 min: other work was running). Absolute "
            "rates are therefore low and vary between runs; the ratios, measured in the same run "
            "against a raw baseline, are the more trustworthy figures. Final numbers should come "
            "from a quiet machine: run `make bench` with nothing else running."
        )
    return (
        f"> Measured on a quiet 2-core virtual machine (load average {report.load_before} before "
        "the run, 1/5/15 min; the benchmarks themselves raise it). Its host is shared, so absolute "
        "rates vary between runs; the ratios, measured in the same run against a raw baseline, "
        "are the more trustworthy figures."
    )


def render(report: Report) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {report.date} by `{report.command}` (bench/run.py) in {report.seconds / 60:.1f} minutes"
        + (" — **quick mode: short runs, indicative only**." if report.quick else "."),
        "",
        _conditions(report),
        "",
        "## Summary",
        "",
        *_summary(report),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in report.machine.items()),
        f"| Load average (1/5/15 min) | before: {report.load_before}; after: {report.load_after} |",
        "",
        "NATS, MariaDB, the services, the load generator and the benchmark driver all share these "
        "cores: every figure includes the cost of the others running beside it.",
        "",
        "## How to run",
        "",
        "```",
        "make bench                                 # servers up, then the full suite; rewrites this file",
        ".venv/bin/python bench/run.py --quick      # a short smoke run (prints, writes nothing)",
        ".venv/bin/python bench/run.py --only scoring --runs 3 --out /tmp/b.md",
        ".venv/bin/python bench/run.py --render-only   # last full run again, after editing bench/analysis/",
        "pip install py-spy && .venv/bin/python -m bench.profile ingest   # or scoring: the profiles",
        "```",
        "",
        "Each benchmark provisions its own program (unique id, start two days ago, end in 30 days) "
        "with the platform's provisioning code, starts the services as processes with the "
        "environment the operator gives them, and deletes the stream, schema, user and bucket "
        "folder afterwards. Tables show the median, min and max of the runs, and every run. "
        "The per-key rate limit of the bench program is lifted (these measure capacity).",
        "",
    ]
    if report.ingest is not None:
        lines += [*_ingest(report.ingest), ""]
    if report.scoring is not None:
        lines += [*_scoring(report.scoring), ""]
    if report.latency is not None:
        lines += [*_latency(report.latency), ""]
    problems = [
        *(f"ingest: {p}" for p in (report.ingest.problems if report.ingest else [])),
        *(f"scoring: {p}" for p in (report.scoring.problems if report.scoring else [])),
        *(f"latency: {p}" for p in (report.latency.problems if report.latency else [])),
        *(f"{name} failed: {error}" for name, error in (report.failures or {}).items()),
    ]
    lines += ["## Anomalies seen during the run", ""]
    lines += [f"- {p}" for p in problems] if problems else ["None: every event sent was accepted and scored."]
    return "\n".join(lines) + "\n"
