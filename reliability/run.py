"""Run the fault-injection reliability suite and write docs/RELIABILITY.md (`make reliability`).

    .venv/bin/python reliability/run.py                     # every scenario, full counts (~10 min)
    .venv/bin/python reliability/run.py --quick             # fewer faults, for CI (~4 min); prints the report
    .venv/bin/python reliability/run.py --only worker-kill  # one scenario (repeatable)
    .venv/bin/python reliability/run.py --render-only       # re-render the page from the full run's JSON

Starts its own NATS (JetStream) and MariaDB on free loopback ports in a temporary folder (via
scripts/servers.sh), because it stops, restarts and kills them; the shared servers are never
touched. Prints progress lines while it works. Exits 1 when an event was lost or counted twice,
a check failed, or a scenario could not run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

# Run as a script (`python reliability/run.py`): make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from bench.common import ROOT, load_average, machine_info, progress

from gamify.logs import configure_logging
from reliability.report import RunResults, render
from reliability.scenarios import SCENARIOS, ScenarioResult, SuiteConfig, run_scenario
from reliability.servers import PrivateServers

DEFAULT_OUT = ROOT / "docs" / "RELIABILITY.md"
DEFAULT_JSON = ROOT / "docs" / "reliability-results.json"


async def _run_all(
    selected: list[str], private: PrivateServers, workdir: Path, config: SuiteConfig
) -> list[ScenarioResult]:
    return [await run_scenario(name, private, workdir, config) for name in selected]


def _config(args: argparse.Namespace) -> SuiteConfig:
    config = SuiteConfig.quick() if args.quick else SuiteConfig()
    overrides = {
        key: value
        for key, value in {
            "worker_kills": args.worker_kills,
            "nats_restarts": args.nats_restarts,
            "mariadb_stops": args.mariadb_stops,
            "mariadb_down": args.mariadb_down,
            "ingest_kills": args.ingest_kills,
            "rate": args.rate,
        }.items()
        if value is not None
    }
    return replace(config, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and shorter outages (CI)")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    parser.add_argument(
        "--worker-kills", type=int, help="SIGKILLs of the scoring worker (default 20; quick 5)"
    )
    parser.add_argument("--nats-restarts", type=int, help="NATS restarts (default 5; quick 2)")
    parser.add_argument("--mariadb-stops", type=int, help="MariaDB stops (default 3; quick 1)")
    parser.add_argument(
        "--mariadb-down", type=float, help="seconds MariaDB stays down (default 30; quick 15)"
    )
    parser.add_argument("--ingest-kills", type=int, help="SIGKILLs of ingest (default 10; quick 3)")
    parser.add_argument("--rate", type=float, help="events per second of the steady load (default 200)")
    parser.add_argument("--out", type=Path, help=f"write the report here (full runs: {DEFAULT_OUT.name})")
    parser.add_argument(
        "--json", type=Path, help=f"write the results JSON here (full runs: {DEFAULT_JSON.name})"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server and service logs)")
    parser.add_argument("--render-only", action="store_true", help="measure nothing: re-render from --json")
    args = parser.parse_args(argv)

    if args.render_only:
        source = args.json or DEFAULT_JSON
        out = args.out or DEFAULT_OUT
        results = RunResults.from_json(source.read_bytes())
        out.write_text(render(results, out.read_text() if out.exists() else ""))
        progress("suite", f"{out} re-rendered from {source}")
        return 0

    selected = args.only or list(SCENARIOS)
    config = _config(args)
    # Only an unmodified full run of every scenario rewrites the committed page.
    full = not args.quick and not args.only and config == SuiteConfig()
    out = args.out or (DEFAULT_OUT if full else None)
    json_out = args.json or (DEFAULT_JSON if full else None)

    configure_logging("WARNING", service="reliability")  # progress lines, not provisioning chatter
    workdir = Path(tempfile.mkdtemp(prefix="gamify-reliability-"))
    private = PrivateServers(workdir / "home")
    results = RunResults(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command="make reliability" if full else "reliability/run.py " + " ".join(sys.argv[1:]),
        quick=args.quick,
        machine={},
        config=asdict(config),
        load_before=load_average(),
    )
    started = time.monotonic()
    try:
        progress(
            "suite",
            f"private servers in {workdir}: NATS :{private.ports.nats}, MariaDB :{private.ports.mysql}",
        )
        private.start()
        results.machine = machine_info(private.servers)
        progress("suite", f"{', '.join(selected)}; load average {results.load_before}")
        outcomes = uvloop.run(_run_all(selected, private, workdir, config))
        results.scenarios = [outcome.to_json() for outcome in outcomes]
    finally:
        try:
            private.close()
        except Exception as exc:  # report, but never hide the run's own error
            progress("suite", f"could not stop the private servers: {exc}")
    results.seconds = time.monotonic() - started
    results.load_after = load_average()

    if json_out is not None:
        json_out.write_bytes(results.to_json())
        progress("suite", f"results written to {json_out}")
    text = render(results, out.read_text() if out is not None and out.exists() else "")
    if out is not None:
        out.write_text(text)
        progress("suite", f"report written to {out}")
    else:
        print(text)
    if args.keep or not results.ok:
        progress("suite", f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    verdict = "all scenarios passed" if results.ok else "FAILED"
    progress("suite", f"{verdict} in {results.seconds / 60:.1f} min")
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(main())
