"""Print a program file as JSON for `kubectl apply -f`, its dates moved to "started yesterday"
when today is outside them (as `gamify demo` does), so the example turns Active on any day.

    .venv/bin/python scripts/kind/program.py examples/ranking-launch.yaml > program.json

Used by scripts/kind/deploy.sh; the re-basing note goes to stderr.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import yaml

from gamify.demo import rebase


def active_document(document: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The document itself when `now` is inside its schedule, else re-based to start a day ago."""
    schedule = document["spec"]["schedule"]
    start = datetime.fromisoformat(str(schedule["start"]))
    end = datetime.fromisoformat(str(schedule["end"]))
    if start <= now < end:
        return document
    return rebase(document, now, days_in=1)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: program.py PROGRAM.yaml", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    original_start = str(document["spec"]["schedule"]["start"])
    document = active_document(document, datetime.now(UTC))
    start = document["spec"]["schedule"]["start"]
    if str(start) != original_start:
        print(f"[kind] re-based the program's dates: it starts {start}", file=sys.stderr)
    # Unquoted YAML timestamps load as datetimes: written back in RFC 3339.
    json.dump(document, sys.stdout, default=lambda value: value.isoformat())
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
