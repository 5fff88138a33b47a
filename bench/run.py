"""Run the benchmarks and write docs/BENCHMARKS.md (`make bench`).

    .venv/bin/python bench/run.py                 # full suite (~10 min), rewrites docs/BENCHMARKS.md
    .venv/bin/python bench/run.py --quick         # short runs; prints the report, writes nothing
    .venv/bin/python bench/run.py --only latency --out /tmp/latency.md

Needs the servers of `make servers-up` (GAMIFY_NATS_URL, GAMIFY_MYSQL_URL). Prints one line
per run while it works. Exits non-zero when a benchmark could not run (a missed target is a
result, not a failure).
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

# Run as a script (`python bench/run.py`): make the repository root importable as `bench`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from bench import ingest_bench, latency_bench, scoring_bench
from bench.common import ROOT, load_average, machine_info, progress
from bench.report import Report, render
from gamify.logs import configure_logging
from gamify.settings import Servers, home

BENCHMARKS = ("ingest", "scoring", "latency")
DEFAULT_OUT = ROOT / "docs" / "BENCHMARKS.md"
# The last full run's results, so the report can be re-rendered after editing bench/analysis/.
LAST_RESULTS = home() / "bench" / "last-report.pickle"


def _configs(
    quick: bool, runs: int | None
) -> tuple[ingest_bench.IngestConfig, scoring_bench.ScoringConfig, latency_bench.LatencyConfig]:
    if quick:
        ingest = ingest_bench.IngestConfig(runs=2, events=5_000, warmup_events=1_000)
        scoring = scoring_bench.ScoringConfig(runs=2, events=5_000)
        latency = latency_bench.LatencyConfig(runs=1, seconds=8)
    else:
        ingest = ingest_bench.IngestConfig()
        scoring = scoring_bench.ScoringConfig()
        latency = latency_bench.LatencyConfig()
    if runs:
        ingest, scoring, latency = (
            replace(ingest, runs=runs),
            replace(scoring, runs=runs),
            replace(latency, runs=runs),
        )
    return ingest, scoring, latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for checking the suite works")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only these (repeatable)")
    parser.add_argument("--runs", type=int, help="runs per benchmark (default 5; quick: 2, latency 1)")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"where to write the report (default {DEFAULT_OUT.relative_to(ROOT)} for full runs)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (service logs)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help=f"measure nothing: re-render the last full run ({LAST_RESULTS}) with the current notes",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        report = pickle.loads(LAST_RESULTS.read_bytes())  # written by this script, below
        (args.out or DEFAULT_OUT).write_text(render(report))
        progress("suite", f"report re-rendered to {args.out or DEFAULT_OUT}")
        return 0
    selected = args.only or list(BENCHMARKS)
    # The committed report only ever holds a full run of every benchmark.
    out = args.out or (DEFAULT_OUT if not args.quick and not args.only and not args.runs else None)

    configure_logging("WARNING", service="bench")  # progress lines only, not provisioning chatter
    servers = Servers.from_env()
    ingest_config, scoring_config, latency_config = _configs(args.quick, args.runs)
    report = Report(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command="make bench" if out == DEFAULT_OUT else "bench/run.py " + " ".join(sys.argv[1:]),
        quick=args.quick,
        machine=machine_info(servers),
        load_before=load_average(),
        failures={},
    )
    progress("suite", f"{', '.join(selected)}; load average {report.load_before}")
    workdir = Path(tempfile.mkdtemp(prefix="gamify-bench-"))
    started = time.monotonic()
    failed = False
    for name in selected:
        progress(name, "starting")
        try:
            if name == "ingest":
                report.ingest = uvloop.run(ingest_bench.run(ingest_config, servers, workdir))
            elif name == "scoring":
                report.scoring = uvloop.run(scoring_bench.run(scoring_config, servers, workdir))
            else:
                report.latency = uvloop.run(latency_bench.run(latency_config, servers, workdir))
        except Exception as exc:
            failed = True
            assert report.failures is not None
            report.failures[name] = f"{type(exc).__name__}: {str(exc)[:500]}"
            progress(name, f"FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    report.seconds = time.monotonic() - started
    report.load_after = load_average()
    text = render(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        if out == DEFAULT_OUT:
            LAST_RESULTS.parent.mkdir(parents=True, exist_ok=True)
            LAST_RESULTS.write_bytes(pickle.dumps(report))
        progress("suite", f"report written to {out}")
    else:
        print(text)
    if args.keep or failed:
        progress("suite", f"service logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
