"""The bad-input section of docs/RELIABILITY.md: schemathesis and the hand-made hostile inputs.

    .venv/bin/python reliability/bad_input.py                  # 5,000 cases; rewrites its section
    .venv/bin/python reliability/bad_input.py --cases 1000     # prints the section, writes nothing

Runs `pytest tests/hostile` (the tests of `make test`, which need the servers of `make
servers-up` and start the local control plane for the program-spec checks) with
GAMIFY_FUZZ_CASES cases of schemathesis against the real ingest process, then renders what the
fuzzer recorded (GAMIFY_FUZZ_REPORT) and the tests' outcome. Exits non-zero when a test failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from bench.common import ROOT, load_average, progress

from reliability.report import with_section

DEFAULT_CASES = 5000
DEFAULT_OUT = ROOT / "docs" / "RELIABILITY.md"
SECTION = "bad-input"
_SUMMARY = re.compile(r"=+ (?P<summary>.*\d+ passed.*?) =+$", re.M)


def run_hostile_tests(cases: int, report_path: Path) -> tuple[int, str]:
    """pytest tests/hostile with `cases` fuzz cases: (exit code, pytest's summary line)."""
    env = {**os.environ, "GAMIFY_FUZZ_CASES": str(cases), "GAMIFY_FUZZ_REPORT": str(report_path)}
    command = [sys.executable, "-m", "pytest", "tests/hostile", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-6000:] + done.stderr[-2000:])
    match = _SUMMARY.search(done.stdout)
    summary = match["summary"] if match else (done.stdout.strip().splitlines() or ["no output"])[-1]
    return done.returncode, summary


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key}: {value:,}" for key, value in sorted(counts.items()))


def render(fuzz: dict[str, Any], summary: str, date: str, load: str) -> str:
    verdict = (
        "0 server errors, 0 schema violations"
        if not (fuzz["server_errors"] or fuzz["schema_violations"] or fuzz["miscounted_answers"])
        else "**FAILURES: see below**"
    )
    return "\n".join(
        [
            "## Bad input",
            "",
            f"Run: {date}, `make reliability` (`reliability/bad_input.py`), load average {load}.",
            "",
            "**schemathesis** against the real ingest process (`python -m gamify.ingest`, real NATS"
            " JetStream behind it), generated from the service's own `/openapi.json`: every answer must"
            " be a documented status with a body and headers that conform to the schema, never a 5xx"
            " other than the documented 503, and every 202 must account for each event it was sent;"
            " afterwards the stream must hold exactly the events that were answered accepted.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| cases | {fuzz['cases']:,} in {fuzz['seconds']:.0f} s |",
            f"| verdict | {verdict} |",
            f"| answers by status | {_counts(fuzz['by_status'])} |",
            f"| requests by operation | {_counts(fuzz['by_operation'])} |",
            f"| API key sent | {_counts(fuzz['by_auth'])} |",
            f"| server errors / schema violations / miscounted answers | {fuzz['server_errors']} / "
            f"{fuzz['schema_violations']} / {fuzz['miscounted_answers']} |",
            f"| events accepted / duplicates / rejected | {fuzz['events_accepted']:,} / "
            f"{fuzz['events_duplicates']:,} / {fuzz['events_rejected']:,} |",
            f"| events in the stream afterwards | {fuzz['events_persisted']:,} "
            f"(= accepted: {'yes' if fuzz['events_persisted'] == fuzz['events_accepted'] else '**NO**'}) |",
            "",
            "**Hand-made hostile inputs** (`tests/hostile/`, also part of `make test`), each checked for"
            " the right status, a message naming the field, and nothing claimed that was not stored:"
            " gzip bombs (at and over the 4 MiB decompressed limit, multi-member, nested; the real"
            " process's memory stays bounded), 10,000-level and huge `properties`, very long ids,"
            " non-UTF-8 bodies, NaN/Infinity/1e400, timestamps in year 1 / 9999 / impossible dates /"
            " minutes in the future, unit overflow, duplicate ids inside a batch, slow clients"
            " (silent, byte-by-byte headers, trickled bodies: closed by the header and body deadlines,"
            " descriptors freed); program specs fuzzed with hypothesis (every invalid spec a"
            " ValidationError naming its field path) and a sample sent to the real API server"
            " (refused with the field named, or caught by the model where the CRD cannot express the"
            " rule: IANA zone existence, condition value types).",
            "",
            f"Outcome of `pytest tests/hostile` in this run: {summary}.",
            "",
            "Rerun: `.venv/bin/python reliability/bad_input.py [--cases N]`.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES, help="schemathesis cases (default 5,000)")
    parser.add_argument(
        "--out", type=Path, help=f"rewrite this page's section (default with 5,000 cases: {DEFAULT_OUT.name})"
    )
    args = parser.parse_args(argv)
    out = args.out or (DEFAULT_OUT if args.cases == DEFAULT_CASES else None)
    load = load_average()
    started = time.monotonic()
    progress("bad-input", f"pytest tests/hostile with {args.cases:,} schemathesis cases")
    with tempfile.TemporaryDirectory() as folder:
        report_path = Path(folder) / "fuzz.json"
        code, summary = run_hostile_tests(args.cases, report_path)
        if not report_path.exists():
            progress("bad-input", f"the fuzzer wrote no report: {summary}")
            return 1
        fuzz = orjson.loads(report_path.read_bytes())
    progress("bad-input", f"{summary} ({time.monotonic() - started:.0f} s)")
    section = render(fuzz, summary, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), load)
    if out is None:
        print(section)
    else:
        out.write_text(with_section(out.read_text() if out.exists() else "", SECTION, section))
        progress("bad-input", f"section written to {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
