"""`python -m gamify.snapshots`: publish the program's snapshots, once or periodically.

Environment (what the operator's CronJob and `gamify local up` set):
- `GAMIFY_PROGRAM_FILE`: the program YAML (re-read before every periodic run);
- `GAMIFY_DATABASE_URL`: the program database user's URL;
- `GAMIFY_BUCKET`: the bucket base when `spec.snapshots.bucket` is absent (objects go under
  `<base>/<program>/`); default a `file://` folder under `.gamify/`;
- `GAMIFY_SNAPSHOT_INTERVAL`: seconds between periodic runs (default 60);
- `GAMIFY_LOG_LEVEL`: default INFO.

`--once` publishes one snapshot and exits (the CronJob); without it, it runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from functools import partial

from gamify.logs import configure_logging, get_logger
from gamify.program import ProgramError, load_program
from gamify.settings import Servers
from gamify.snapshots.writer import run_periodic, run_snapshot, snapshot_base

DEFAULT_INTERVAL_SECONDS = 60.0

log = get_logger("gamify.snapshots")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gamify.snapshots", description="Publish a program's snapshots to its bucket prefix."
    )
    parser.add_argument("--once", action="store_true", help="publish one snapshot and exit")
    parser.add_argument(
        "--interval",
        type=float,
        default=float(os.environ.get("GAMIFY_SNAPSHOT_INTERVAL", DEFAULT_INTERVAL_SECONDS)),
        help="seconds between runs in periodic mode (GAMIFY_SNAPSHOT_INTERVAL)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    configure_logging(os.environ.get("GAMIFY_LOG_LEVEL", "INFO"), service="snapshots")
    program_file = os.environ.get("GAMIFY_PROGRAM_FILE")
    database_url = os.environ.get("GAMIFY_DATABASE_URL")
    if not program_file or not database_url:
        log.error("GAMIFY_PROGRAM_FILE and GAMIFY_DATABASE_URL must be set")
        return 2
    try:
        program = load_program(program_file)
    except (ProgramError, OSError) as exc:
        log.error("cannot load the program", error=str(exc))
        return 2
    default_bucket = Servers.from_env().bucket

    if args.once:
        try:
            run_snapshot(program, database_url, snapshot_base(program, default_bucket))
        except Exception as exc:
            log.exception("snapshot failed", program=program.name, error=str(exc))
            return 1
        return 0

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("publishing snapshots periodically", program=program.name, interval_seconds=args.interval)
    run_periodic(partial(load_program, program_file), database_url, default_bucket, args.interval, stop)
    log.info("stopped", program=program.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
