"""`gamify demo` / `make demo`: the whole pipeline on one machine, with the example programs.

For each program in `examples/`: bring it up (`gamify local up`), send a realistic synthetic
stream over HTTP (employees on mobile, web and chatbot; batches, gzip, re-sent batches, a few
bad events), wait until scoring has caught up, publish a snapshot and print what apps would
read. The examples' dates are re-based onto today, so the demo runs on any day.
"""

from __future__ import annotations

import gzip
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import create_engine, text

from gamify import local
from gamify.program import REDEEM_EVENT, ConditionOp, Program, ProgramSpec, parse_program
from gamify.settings import Servers, home, without_login

EXAMPLES = Path("examples")
SOURCES = [("mobile", 0.6), ("web", 0.25), ("chatbot", 0.15)]
BATCH = 100


def rebase(document: dict[str, Any], today: datetime, days_in: int) -> dict[str, Any]:
    """Shift every date of a program so it started `days_in` days before `today`."""
    spec = document["spec"]
    start = datetime.fromisoformat(str(spec["schedule"]["start"]))
    shift = (today - timedelta(days=days_in)).replace(tzinfo=None) - start.replace(tzinfo=None)
    shift = timedelta(days=shift.days)  # whole days keep times of day and offsets

    def moved(value: Any) -> str:
        return (datetime.fromisoformat(str(value)) + shift).isoformat()

    spec["schedule"]["start"] = moved(spec["schedule"]["start"])
    spec["schedule"]["end"] = moved(spec["schedule"]["end"])
    for boost in spec.get("boosts", []):
        boost["start"], boost["end"] = moved(boost["start"]), moved(boost["end"])
    return document


def _properties(spec: ProgramSpec, event_type: str, rng: random.Random) -> dict[str, Any]:
    """Plausible properties for an event type: unit amounts, conditions met most of the time."""
    props: dict[str, Any] = {}
    for rule in spec.rules_for(event_type):
        if rule.unit:
            props[rule.unit.property] = int(rng.uniform(0.2, 14) * rule.unit.size)
        for cond in rule.conditions:
            meets = rng.random() < 0.75
            value = cond.value
            if cond.op in (ConditionOp.gte, ConditionOp.gt):
                props[cond.property] = value + rng.randint(0, 40) if meets else value - rng.randint(1, 20)
            elif cond.op in (ConditionOp.lte, ConditionOp.lt):
                props[cond.property] = value - rng.randint(0, 20) if meets else value + rng.randint(1, 20)
            elif cond.op == ConditionOp.eq:
                props[cond.property] = value if meets else (not value if isinstance(value, bool) else None)
            elif cond.op == ConditionOp.in_:
                props[cond.property] = rng.choice(value) if meets else "other"
    return props


def synthetic_events(
    program: Program, employees: int, days: int, now: datetime, seed: int = 7
) -> list[dict[str, Any]]:
    """A few events per employee per day; deterministic ids so re-running the demo is idempotent."""
    rng = random.Random(f"{seed}-{program.name}")
    spec = program.spec
    zone = spec.schedule.zone
    event_types = sorted({rule.event for rule in spec.rules})
    start = max(spec.schedule.start, now - timedelta(days=days))
    events = []
    for n in range(1, employees + 1):
        user = f"emp-{n:05d}"
        activity = rng.uniform(0.3, 1.0)  # some employees are far keener than others
        day = start.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        index = 0
        while day < now:
            for event_type in event_types:
                if rng.random() > activity * 0.8:
                    continue
                occurred = day + timedelta(minutes=rng.randint(6 * 60, 22 * 60))
                if occurred >= now or occurred < spec.schedule.start:
                    continue
                index += 1
                events.append(
                    {
                        "id": f"{user}-{index:04d}",
                        "type": event_type,
                        "user": user,
                        "occurredAt": occurred.astimezone(UTC).isoformat(),
                        "properties": _properties(spec, event_type, rng),
                        "source": _source(rng),
                    }
                )
            day += timedelta(days=1)
        if spec.rewards and rng.random() < 0.5:
            reward = rng.choice(spec.rewards)
            index += 1
            events.append(
                {
                    "id": f"{user}-{index:04d}",
                    "type": REDEEM_EVENT,
                    "user": user,
                    "occurredAt": (now - timedelta(minutes=rng.randint(1, 120))).isoformat(),
                    "properties": {"reward": reward.id},
                    "source": "web",
                }
            )
    rng.shuffle(events)  # apps send out of order: late phones, batched uploads
    return events


def _source(rng: random.Random) -> str:
    pick, total = rng.random(), 0.0
    for name, share in SOURCES:
        total += share
        if pick < total:
            return name
    return SOURCES[-1][0]


def bad_events(now: datetime) -> list[dict[str, Any]]:
    """What real clients get wrong; each must be rejected alone, with a reason."""
    return [
        {"id": "bad-no-user", "type": "activity.steps", "occurredAt": now.isoformat()},
        {"id": "bad-future", "type": "activity.steps", "user": "emp-00001",
         "occurredAt": (now + timedelta(hours=2)).isoformat()},
        {"id": "bad type!", "type": "activity.steps", "user": "emp-00002",
         "occurredAt": now.isoformat()},
        {"id": "bad-no-offset", "type": "activity.steps", "user": "emp-00003",
         "occurredAt": "2027-01-05T10:00:00"},
    ]  # fmt: skip


@dataclass
class SendTotals:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retried_batches: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def send(
    state: local.LocalState, events: list[dict[str, Any]], progress: Progress, rng: random.Random
) -> SendTotals:
    totals = SendTotals()
    task = progress.add_task(state.program, total=len(events))
    headers = {"Authorization": f"Bearer {state.api_key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=state.ingest_url, headers=headers, timeout=30) as client:
        for offset in range(0, len(events), BATCH):
            batch = events[offset : offset + BATCH]
            body = orjson.dumps({"events": batch})
            extra = {}
            if rng.random() < 0.6:  # mobile clients compress
                body, extra = gzip.compress(body), {"Content-Encoding": "gzip"}
            attempts = 2 if rng.random() < 0.1 else 1  # a lost answer: the client re-sends
            for _ in range(attempts):
                answer = _post(client, body, extra)
                totals.accepted += answer["accepted"]
                totals.duplicates += answer["duplicates"]
                totals.rejected += len(answer["rejected"])
                for item in answer["rejected"]:
                    reason = str(item.get("reason", "?")).split(":")[0]
                    totals.reasons[reason] = totals.reasons.get(reason, 0) + 1
            totals.retried_batches += attempts - 1
            totals.sent += len(batch)
            progress.advance(task, len(batch))
    return totals


def _post(client: httpx.Client, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """POST with the backoff a mobile client would use on 429/503."""
    for attempt in range(8):
        response = client.post("/v1/events", content=body, headers=headers)
        if response.status_code == 202:
            return dict(response.json())
        if response.status_code in (429, 503):
            time.sleep(float(response.headers.get("Retry-After", "1")) * (1 + attempt / 4))
            continue
        raise RuntimeError(f"ingest answered {response.status_code}: {response.text}")
    raise RuntimeError("ingest kept refusing the batch")


def _first(database_url: str, query: str) -> str | None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(text(query)).first()
            return None if row is None else str(row[0])
    finally:
        engine.dispose()


def top_user(state: local.LocalState) -> str | None:
    return _first(state.database_url, "SELECT user_id FROM users ORDER BY points DESC, user_id LIMIT 1")


def redeemer(state: local.LocalState) -> str | None:
    return _first(
        state.database_url,
        "SELECT user_id FROM redemptions WHERE status = 'fulfilled' ORDER BY user_id LIMIT 1",
    )


def run_demo(console: Console, employees: int = 300, days: int = 6) -> None:
    from gamify.cli import leaderboard, user
    from gamify.snapshots.writer import run_snapshot

    servers = Servers.from_env()
    now = datetime.now(UTC)
    rng = random.Random(11)
    workdir = home() / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]gamify demo")
    console.print(
        f"servers: NATS {without_login(servers.nats_url)} · MySQL {servers.mysql_admin_url.split('@')[-1]} · "
        f"bucket {servers.bucket}\nexample dates are re-based so each program started {days} "
        "days ago (launch boosts in force)."
    )
    examples = sorted(EXAMPLES.glob("*.yaml"))
    if not examples:
        raise local.LocalError(
            f"no example programs in {EXAMPLES.absolute()}: run the demo from the repository root"
        )
    states: list[tuple[Program, local.LocalState]] = []
    for path in examples:
        document = rebase(yaml.safe_load(path.read_text()), now, days)
        program = parse_program(document)
        rebased = workdir / path.name
        rebased.write_text(yaml.safe_dump(document, sort_keys=False))
        with console.status(f"bringing up {program.name} …"):
            states.append((program, local.up(rebased, servers)))
        console.print(f"[green]✓[/] {program.name} ready at {states[-1][1].ingest_url}")

    totals: dict[str, SendTotals] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for program, state in states:
            events = synthetic_events(program, employees, days, now)
            events[10:10] = bad_events(now)
            totals[program.name] = send(state, events, progress, rng)

    # Fits an 80-column terminal (the time to score is on the ✓ lines, not in a 7th column).
    summary = Table(
        title="events",
        caption="duplicates: ids already stored (re-sent batches, earlier demo runs)",
    )
    summary.add_column("program", no_wrap=True)
    for column in ("sent", "accepted", "duplicates", "rejected", "re-sent"):
        summary.add_column(column, justify="right")
    for program, state in states:
        began = time.monotonic()
        local.wait_scored(program.name, servers=servers)
        scored_in = time.monotonic() - began
        report = run_snapshot(program, state.database_url, state.bucket)
        t = totals[program.name]
        summary.add_row(
            program.name, str(t.sent), str(t.accepted), str(t.duplicates), str(t.rejected),
            str(t.retried_batches),
        )  # fmt: skip
        console.print(
            f"[green]✓[/] {program.name}: scored {scored_in:.1f}s after the last send; "
            f"snapshot {report.version}, {report.files_written} files"
        )
    console.print(summary)

    for program, _ in states:
        if program.spec.leaderboards:
            leaderboard(program.name, None, top=10)
    # Two employees worth a look: the leader of a ranked program (badges, ranks), and someone
    # who redeemed a reward in the rewards-only program.
    ranked = next(((p, s) for p, s in states if p.spec.leaderboards and p.spec.badges), states[0])
    user(ranked[0].name, top_user(ranked[1]) or "emp-00001")
    for program, state in states:
        if program.spec.mode.value == "rewards":
            user(program.name, redeemer(state) or "emp-00001")
    console.print(
        "\nThe programs keep running: try `gamify local status`, post events with the API key "
        "from `gamify local up -f .gamify/demo/<file> --json`, and stop them with `gamify local down`."
    )
