"""The results of a reliability run: saved as JSON, rendered as docs/RELIABILITY.md.

The page has places for sections other tools write (the soak, bad input), between markers
`<!-- section:NAME -->` and `<!-- /section:NAME -->`; rendering over an existing page keeps
whatever those places hold, so a fault run never erases a soak section and vice versa.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

# Sections this renderer leaves to others (name, heading, how to produce it).
FOREIGN_SECTIONS = (
    ("soak", "Soak", "`reliability/soak.py` (`run(...)`, `render(...)`): a 10-minute steady load"),
    ("bad-input", "Bad input", "the bad-input suite (schemathesis and hand-made hostile inputs)"),
)
NONE = "-"  # a figure that does not exist
_SECTION = re.compile(r"<!-- section:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /section:(?P=name) -->", re.S)


@dataclass
class RunResults:
    date: str
    command: str
    quick: bool
    machine: dict[str, str]
    config: dict[str, Any]
    scenarios: list[dict[str, Any]] = field(default_factory=list)  # ScenarioResult.to_json()
    seconds: float = 0.0
    load_before: str = ""
    load_after: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.scenarios) and all(scenario["ok"] for scenario in self.scenarios)

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> RunResults:
        return cls(**orjson.loads(raw))


def _seconds(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f} s"


def _spread(values: Sequence[float | None]) -> str:
    """`median (max)` of the faults that recovered; `never` when some fault never did."""
    seen = [v for v in values if v is not None]
    if not values:
        return NONE
    if len(seen) < len(values):
        return f"never ({len(values) - len(seen)} of {len(values)})"
    return f"{statistics.median(seen):.1f} s (max {max(seen):.1f} s)"


def _counts_row(scenario: dict[str, Any]) -> str:
    counts = scenario.get("counts")
    faults = scenario["faults"]
    if counts is None:
        return f"| {scenario['title']} | {len(faults)} | - | - | - | - | - | - |"
    recover = _spread([f["all_scored"] for f in faults]) if faults else "no fault"
    return (
        f"| {scenario['title']} | {len(faults)} | {counts['sent']:,} | {counts['accepted']:,} | "
        f"{counts['scored']:,} | **{counts['lost']}** | **{counts['double']}** | {recover} |"
    )


def _scenario_section(scenario: dict[str, Any]) -> list[str]:
    counts = scenario.get("counts")
    faults = scenario["faults"]
    verdict = "passed" if scenario["ok"] else "**FAILED**"
    lines = [f"### {scenario['title']} — {verdict}", "", f"**What was done:** {scenario['done']}", ""]
    if scenario.get("error"):
        lines += [f"**Could not run:** `{scenario['error']}`", ""]
    if counts is not None:
        lines += [
            "| sent | accepted | scored | lost | double | rejected | no final answer "
            "| scored, never confirmed | dead letters |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {counts['sent']:,} | {counts['accepted']:,} | {counts['scored']:,} | **{counts['lost']}** | "
            f"**{counts['double']}** | {counts['rejected']} | {counts['unresolved']} | {counts['phantom']} | "
            f"{scenario.get('dead_letters')} |",
            "",
        ]
    if faults:
        lines += [
            f"Each fault lasted {_spread([f['ended'] - f['started'] for f in faults])} (from the signal "
            "until the process or server was back). "
            f"Time to recover after each of the {len(faults)} faults, median (max): first event accepted "
            f"again {_spread([f['first_accepted'] for f in faults])}; first event scored again "
            f"{_spread([f['first_scored'] for f in faults])}; everything sent before the fault's end "
            f"scored {_spread([f['all_scored'] for f in faults])}.",
            "",
        ]
    client = scenario.get("client") or {}
    if client:
        statuses = ", ".join(f"{_status(code)}: {n}" for code, n in client["statuses"].items())
        lines += [
            f"Client: {client['requests']:,} requests ({client['retries']:,} retries): {statuses}.",
            "",
        ]
    lines += ["| check | result | detail |", "|---|---|---|"]
    for check in scenario["checks"]:
        mark = "pass" if check["passed"] else "**FAIL**"
        lines.append(f"| {check['name']} | {mark} | {_cell(check['detail'])} |")
    lines.append("")
    if scenario.get("lost_ids"):
        lines += [f"Lost event ids (first 20): `{', '.join(scenario['lost_ids'])}`", ""]
    if faults:
        lines += [
            "<details><summary>Each fault</summary>",
            "",
            "| # | detail | first accepted | first scored | all scored |",
            "|---:|---|---:|---:|---:|",
        ]
        for fault in faults:
            detail = ", ".join(f"{key} {value}" for key, value in fault["detail"].items())
            lines.append(
                f"| {fault['index'] + 1} | {_cell(detail)} | {_seconds(fault['first_accepted'])} | "
                f"{_seconds(fault['first_scored'])} | {_seconds(fault['all_scored'])} |"
            )
        lines += ["", "</details>", ""]
    return lines


def _status(code: str) -> str:
    return {"0": "connection error", "-1": "timeout"}.get(code, code)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:300]


def foreign_sections(existing: str) -> dict[str, str]:
    """What an existing page holds between each section's markers."""
    return {match["name"]: match["body"] for match in _SECTION.finditer(existing)}


def with_section(page: str, name: str, body: str) -> str:
    """`page` with the place of section `name` now holding `body` (the rest untouched); a page
    without that place gets it at the end."""
    block = f"<!-- section:{name} -->\n{body.rstrip()}\n\n<!-- /section:{name} -->"
    if name not in foreign_sections(page):
        return page.rstrip("\n") + "\n\n" + block + "\n"
    return _SECTION.sub(lambda match: block if match["name"] == name else match[0], page)


def render(results: RunResults, existing: str = "") -> str:
    kept = foreign_sections(existing)
    verdict = "every scenario passed" if results.ok else "**some scenarios FAILED**"
    lines = [
        "# Reliability",
        "",
        "The platform's promise: *an accepted event is scored exactly once.* Each scenario below runs",
        "the real services as processes (`python -m gamify.ingest`, `python -m gamify.scoring`) against",
        "private NATS JetStream and MariaDB servers started for the run (so they can be stopped and",
        "killed), under a steady load from a client that keeps its own record of every event id and its",
        "final answer, retrying as a phone would (same ids; after `Retry-After` on 503). After the faults",
        "the client's record is reconciled against the program's ledger:",
        "",
        "- **accepted**: events the client was told are stored (accepted, or a duplicate of a stored one);",
        "- **scored**: rows in the program's `events` table;",
        "- **lost**: accepted but not scored — must be 0;",
        "- **double**: an (event, rule) awarded twice, an event spent twice, or a balance or daily-cap",
        "  counter that differs from the ledger sums — must be 0;",
        "- **time to recover**: from the end of a fault (process restarted, server back) to the first",
        "  accepted answer, the first scored event, and until every event sent before it was scored.",
        "",
        f"Run: {results.date}, `{results.command}`{' (quick mode)' if results.quick else ''}, "
        f"{results.seconds / 60:.1f} minutes; {verdict}.",
        "",
        "## Rerun",
        "",
        "```sh",
        "make reliability                                 # every scenario, full counts; rewrites this page",
        ".venv/bin/python reliability/run.py --quick      # fewer faults (CI, ~4 minutes); prints the report",
        ".venv/bin/python reliability/run.py --only race  # one scenario (repeatable)",
        "```",
        "",
        "The run exits non-zero when any event is lost or double-counted, a check fails, or a scenario",
        "could not run. The consumer's ack wait is shortened to "
        f"{results.config.get('ack_wait', '?')} s (production: 30 s) so that the batch a SIGKILLed",
        "worker held comes back within seconds: the *all scored* times after a worker kill are that wait.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in results.machine.items()),
        f"| Load average before / after | {results.load_before} / {results.load_after} |",
        "",
        "(2 cores shared with other work: the times to recover include the wait for a CPU.)",
        "",
        "## Faults",
        "",
        "| scenario | faults | sent | accepted | scored | lost | double "
        "| all scored after a fault, median (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *(_counts_row(scenario) for scenario in results.scenarios),
        "",
    ]
    for scenario in results.scenarios:
        lines += _scenario_section(scenario)
    for name, heading, producer in FOREIGN_SECTIONS:
        body = kept.get(name) or (
            f"## {heading}\n\n_Not part of this page yet: this place is for {producer}._\n\n"
        )
        lines += [f"<!-- section:{name} -->", body.rstrip("\n"), "", f"<!-- /section:{name} -->", ""]
    return "\n".join(lines)
