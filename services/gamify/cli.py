"""`gamify`: the command line (DESIGN.md, "The one-machine command line").

gamify local up -f PROGRAM.yaml [--json]    provision + start ingest, scoring, snapshots
gamify local down [PROGRAM]                 stop one program (or all)
gamify local status                         what runs here
gamify snapshot run PROGRAM                 one snapshot now
gamify leaderboard PROGRAM [BOARD]          a board from the published snapshot
gamify user PROGRAM USER                    one employee's published snapshot
gamify validate PROGRAM.yaml                check a program file, naming bad fields
gamify users erase PROGRAM USER             erase one employee (LGPD/GDPR), recorded in an audit log
gamify users erasures PROGRAM [--user U]    the program's erasure audit log
gamify deadletters list PROGRAM             events scoring gave up on, with the reason
gamify deadletters replay PROGRAM --all     put them back on their subjects (or name EVENT_IDs)
gamify run ingest|scoring|snapshots         the service processes (what containers run)
gamify demo                                 the whole pipeline on this machine
"""

from __future__ import annotations

import contextlib
import json
import runpy
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from gamify.program import ProgramError, load_program

app = typer.Typer(
    help="Multi-tenant gamification platform: programs, events, scores and snapshots.",
    no_args_is_help=True,
    add_completion=False,
)
local_app = typer.Typer(help="Run programs on this machine, no cluster needed.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Publish snapshots to the bucket.", no_args_is_help=True)
app.add_typer(local_app, name="local")
app.add_typer(snapshot_app, name="snapshot")
users_app = typer.Typer(help="Employees' data: erasure (LGPD/GDPR) and its audit log.", no_args_is_help=True)
app.add_typer(users_app, name="users")
deadletters_app = typer.Typer(
    help="Events scoring gave up on: read them, replay them once the cause is fixed.", no_args_is_help=True
)
app.add_typer(deadletters_app, name="deadletters")

console = Console()
errors = Console(stderr=True)


@contextlib.contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A bar on stderr while a long operation runs (gone when it ends); yields the
    `(done, total)` callback the operation reports to."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), console=errors, transient=True)
    task = bar.add_task(label, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _fail(message: str, code: int = 1) -> None:
    errors.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@local_app.command("up")
def local_up(
    file: Annotated[Path, typer.Option("-f", "--file", help="Program YAML (as for kubectl apply).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Provision a program and start its processes; returns when ingest is ready."""
    from gamify import local
    from gamify.provisioning import ProvisioningError

    try:
        with errors.status(f"bringing up {file} …"):
            state = local.up(file)
    except ProvisioningError as exc:
        _fail(f"could not provision the program ({exc}); are the servers up? (make servers-up)")
        return
    except (ProgramError, local.LocalError, OSError) as exc:
        _fail(str(exc))
        return
    info = state.public()
    if as_json:
        print(json.dumps(info))
        return
    table = Table(title=f"program {state.program} is up", show_header=False)
    for key, value in info.items():
        table.add_row(key, value)
    console.print(table)


@local_app.command("down")
def local_down(
    program: Annotated[str | None, typer.Argument(help="Program id; all when omitted.")] = None,
) -> None:
    """Stop a program's processes (its stream, schema and snapshots stay)."""
    from gamify import local

    names = [program] if program else local.known_programs()
    for name in names:
        try:
            local.down(name)
        except local.LocalError as exc:
            _fail(str(exc))
        console.print(f"stopped {name}")


@local_app.command("status")
def local_status() -> None:
    """Programs set up on this machine and their processes."""
    from gamify import local

    names = local.known_programs()
    if not names:
        console.print("no programs on this machine: start one with `gamify local up -f PROGRAM.yaml`")
        return
    # A row per process, so the table stays narrow; names never cut, long URLs wrapped (not cut).
    table = Table("program", "process", "state", "serves / writes to")
    table.columns[0].no_wrap = True
    table.columns[-1].overflow = "fold"
    for name in names:
        state = local.load_state(name)
        alive = local.running(state)
        where = {"ingest": state.ingest_url, "snapshots": state.snapshot_url}
        first_column = [name, f"[dim]tenant {state.tenant}[/]"]
        for index, process in enumerate(local.PROCESSES):
            table.add_row(
                first_column[index] if index < len(first_column) else "",
                process,
                "[green]up[/]" if alive.get(process) else "[red]down[/]",
                where.get(process, ""),
                end_section=index == len(local.PROCESSES) - 1,
            )
    console.print(table)


@snapshot_app.command("run")
def snapshot_run(program: Annotated[str, typer.Argument(help="Program id.")]) -> None:
    """Publish one snapshot of PROGRAM now."""
    from gamify import local
    from gamify.snapshots.writer import run_snapshot

    try:
        state = local.load_state(program)
    except local.LocalError as exc:
        _fail(str(exc))
        return
    spec = load_program(local.program_dir(program) / "program.yaml")
    report = run_snapshot(spec, state.database_url, state.bucket)
    table = Table(title=f"snapshot of {program}", show_header=False)
    for key, value in vars(report).items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)


def _published(program: str, key: str) -> dict[str, Any]:
    from gamify import local
    from gamify.storage import open_store

    state = local.load_state(program)
    data = open_store(state.snapshot_url).get(key)
    if data is None:
        _fail(f"{state.snapshot_url}{key} is not published yet: run `gamify snapshot run {program}`")
    return dict(json.loads(data or b"{}"))


@app.command("leaderboard")
def leaderboard(
    program: Annotated[str, typer.Argument(help="Program id.")],
    board: Annotated[str | None, typer.Argument(help="Board id; the first board when omitted.")] = None,
    top: Annotated[int, typer.Option(help="Rows to show.")] = 10,
) -> None:
    """Show a leaderboard as apps see it (from the published snapshot)."""
    from gamify import local

    try:
        spec = load_program(local.program_dir(program) / "program.yaml").spec
    except (ProgramError, OSError):
        _fail(f"program {program!r} is not set up here")
        return
    if not spec.leaderboards:
        _fail(f"program {program!r} has no leaderboards (mode {spec.mode.value})")
    board_id = board or spec.leaderboards[0].id
    doc = _published(program, f"leaderboards/{board_id}.json")
    # Heading and date on lines of their own: as title and caption they would wrap to the
    # width of three narrow columns.
    console.print(
        f"[bold]{program} · {board_id}[/] ({doc.get('window')}) · {doc.get('participants')} participants"
    )
    table = Table(
        Column("rank", justify="right"),
        "user",
        Column("points", justify="right"),
    )
    for entry in doc.get("entries", [])[:top]:
        table.add_row(str(entry["rank"]), entry["user"], f"{entry['points']:,}")
    console.print(table)
    console.print(f"[dim]generated {doc.get('generatedAt')}[/]")


@app.command("user")
def user(
    program: Annotated[str, typer.Argument(help="Program id.")],
    user_id: Annotated[str, typer.Argument(metavar="USER", help="Employee id.")],
) -> None:
    """Show one employee's published snapshot."""
    doc = _published(program, f"users/{user_id}.json")
    console.print(f"[bold]{program} · {user_id}[/]")
    summary = Table(show_header=False)
    summary.add_row("points", f"{doc['points']:,}")
    summary.add_row("balance", f"{doc['balance']:,}")
    for board_id, rank in doc.get("ranks", {}).items():
        summary.add_row(f"rank on {board_id}", "-" if rank is None else str(rank))
    summary.add_row("badges", ", ".join(doc.get("badges", [])) or "-")
    summary.add_row("updated", str(doc.get("updatedAt")))
    console.print(summary)
    if doc.get("redemptions"):
        table = Table("redemption", "reward", "status", "reason")
        for item in doc["redemptions"]:
            table.add_row(item["id"], item["reward"], item["status"], item.get("reason") or "")
        console.print(table)


@app.command("validate")
def validate(file: Annotated[Path, typer.Argument(help="Program YAML.")]) -> None:
    """Check a program file; every problem names its field."""
    try:
        program = load_program(file)
    except ProgramError as exc:
        for problem in str(exc).split("; "):
            errors.print(f"[red]✗[/] {problem}")
        raise typer.Exit(1) from None
    except OSError as exc:
        _fail(str(exc))
        return
    spec = program.spec
    console.print(
        f"[green]✓[/] {program.name} (tenant {spec.tenant}, mode {spec.mode.value}): "
        f"{len(spec.rules)} rules, {len(spec.boosts)} boosts, {len(spec.badges)} badges, "
        f"{len(spec.rewards)} rewards, {len(spec.leaderboards)} boards"
    )


def _erasure_target(program: str) -> Any:
    """Where PROGRAM keeps its data: the local set-up when there is one, else the servers of the
    environment (GAMIFY_MYSQL_URL as admin on the program's schema, GAMIFY_BUCKET)."""
    from sqlalchemy.engine import make_url

    from gamify import local
    from gamify.naming import ProgramNames
    from gamify.privacy.erase import ErasureTarget
    from gamify.settings import Servers
    from gamify.storage import join_url

    servers = Servers.from_env()
    try:
        state = local.load_state(program)
    except local.LocalError:
        names = ProgramNames(program)
        database_url = make_url(servers.mysql_admin_url).set(database=names.schema)
        return ErasureTarget(
            program,
            database_url.render_as_string(hide_password=False),
            join_url(servers.bucket, program),
            servers.nats_url,
        )
    return ErasureTarget(program, state.database_url, state.snapshot_url, servers.nats_url)


@users_app.command("erase")
def users_erase(
    program: Annotated[str, typer.Argument(help="Program id.")],
    user_id: Annotated[str, typer.Argument(metavar="USER", help="Employee id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    requested_by: Annotated[
        str | None, typer.Option("--by", help="Who asked for it, for the audit log (default: you).")
    ] = None,
) -> None:
    """Erase everything about USER in PROGRAM, recorded in an audit log.

    Events (anonymised), ledger, balances, badges, redemptions, board points, snapshot object and
    stream messages.
    """
    import getpass

    from sqlalchemy.exc import SQLAlchemyError

    from gamify.privacy.erase import ErasureError, erase_user
    from gamify.storage import StorageError
    from gamify.stream_scan import NATS_FAILURES

    if not yes and not typer.confirm(
        f"Erase every record of {user_id!r} in {program!r}? This cannot be undone", err=True
    ):
        raise typer.Exit(1)
    target = _erasure_target(program)
    by = requested_by or getpass.getuser()
    try:
        with _progress_bar("scanning the stream") as progress:
            report = erase_user(target, user_id, by, progress=progress)
    except ErasureError as exc:
        _fail(str(exc))
        return
    except (SQLAlchemyError, StorageError, *NATS_FAILURES) as exc:
        # The driver's message names the server and the problem, never a password.
        _fail(
            f"erasure of {user_id!r} in {program!r} failed, run it again: {getattr(exc, 'orig', None) or exc}"
        )
        return
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    table = Table("removed", "count", title=f"erasure #{report.erasure_id}: {user_id} in {program}")
    for name, count in report.counts.items():
        table.add_row(name, f"{count:,}")
    console.print(table)
    console.print(
        f"user hash {report.user_hash[:16]}… · requested by {report.requested_by} · "
        f"stream messages read {report.stream_scanned:,} · {report.duration_seconds}s"
    )
    if report.nothing_left:
        note = f" (erased {report.previous_erasures} time(s) before)" if report.previous_erasures else ""
        console.print(f"[yellow]nothing left to erase[/]{note}")


@users_app.command("erasures")
def users_erasures(
    program: Annotated[str, typer.Argument(help="Program id.")],
    user_id: Annotated[
        str | None, typer.Option("--user", help="Only this employee's erasures (proves it was erased).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """The program's erasure audit log: who asked, when, and how much was removed."""
    from gamify.privacy.erase import audit_log

    entries = audit_log(_erasure_target(program).database_url, user_id)
    if as_json:
        print(json.dumps([entry.as_dict() for entry in entries]))
        return
    table = Table(
        "#",
        "started (UTC)",
        "finished (UTC)",
        "requested by",
        "user hash",
        "removed",
        title=f"erasures in {program}",
    )
    for entry in entries:
        removed = ", ".join(f"{name} {count}" for name, count in entry.counts.items() if count) or "nothing"
        finished = entry.finished_at.isoformat(" ", "seconds") if entry.finished_at else "[red]unfinished[/]"
        table.add_row(
            str(entry.id),
            entry.started_at.isoformat(" ", "seconds"),
            finished,
            entry.requested_by,
            entry.user_hash[:16] + "…",
            removed,
        )
    console.print(table)


def _dead_letter_rows(title: str, letters: list[Any], notes: dict[int, str] | None = None) -> Table:
    """Dead letters as a table; `notes` (by dead-letter sequence) replace the reason column."""
    # Ids can be 128 characters and reasons longer: both wrap; the time never does.
    table = Table(
        Column("seq", justify="right"),
        Column("event id, type", overflow="fold"),
        Column("dead-lettered (UTC)", no_wrap=True),
        Column("why" if notes else "reason", overflow="fold"),
        title=title,
    )
    for letter in letters:
        when = letter.dead_lettered_at.strftime("%Y-%m-%d %H:%M:%S") if letter.dead_lettered_at else "-"
        why = (notes or {}).get(letter.sequence, letter.reason)
        event = f"{escape(letter.event_id or '-')}\n[dim]{escape(letter.event_type)}[/]"
        table.add_row(str(letter.sequence), event, when, escape(why))  # reasons quote "[...]"
    return table


def _print_letters(title: str, letters: list[Any], limit: int, notes: dict[int, str] | None = None) -> None:
    console.print(_dead_letter_rows(title, letters[:limit], notes))
    if len(letters) > limit:
        console.print(f"… and {len(letters) - limit:,} more (--limit N to see more, --json for all)")


def _nats_failure(doing: str, exc: Exception) -> None:
    _fail(f"could not {doing} ({exc}); is NATS up, and GAMIFY_NATS_URL an admin login?")


LIMIT_OPTION = typer.Option("--limit", min=1, help="Rows to show.")


@deadletters_app.command("list")
def deadletters_list(
    program: Annotated[str, typer.Argument(help="Program id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list (every one).")] = False,
    limit: Annotated[int, LIMIT_OPTION] = 50,
) -> None:
    """The program's dead letters, oldest first, with the reason each one failed."""
    from gamify.deadletters import run_list
    from gamify.settings import Servers
    from gamify.stream_scan import NATS_FAILURES

    try:
        letters = run_list(Servers.from_env().nats_url, program)
    except NATS_FAILURES as exc:
        _nats_failure(f"read the dead letters of {program!r}", exc)
        return
    if as_json:
        print(json.dumps([letter.as_dict() for letter in letters]))
        return
    if not letters:
        console.print(f"no dead letters in {program}")
        return
    _print_letters(f"{len(letters):,} dead letter(s) in {program}", letters, limit)


@deadletters_app.command("replay")
def deadletters_replay(
    program: Annotated[str, typer.Argument(help="Program id.")],
    event_ids: Annotated[
        list[str] | None, typer.Argument(metavar="[EVENT_ID]...", help="Replay these events only.")
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    limit: Annotated[int, LIMIT_OPTION] = 50,
) -> None:
    """Put dead-lettered events back on their subjects, once the cause is fixed; each scores once.

    Their dead letters are deleted; replaying an event twice never counts it twice.
    """
    from gamify.deadletters import run_replay
    from gamify.settings import Servers
    from gamify.stream_scan import NATS_FAILURES

    if bool(event_ids) == replay_all:
        _fail("name the events to replay (EVENT_ID ...) or pass --all, not both", code=2)
    try:
        with _progress_bar("replaying") as progress:
            chosen = None if replay_all else event_ids
            result = run_replay(Servers.from_env().nats_url, program, chosen, progress=progress)
    except NATS_FAILURES as exc:
        # Safe to run again: what was replayed is gone from the dead letters, or counts once.
        _nats_failure(f"replay the dead letters of {program!r}, run it again", exc)
        return
    if result.replayed:
        _print_letters(f"{len(result.replayed):,} replayed in {program}", result.replayed, limit)
    if result.not_replayable:
        letters = [letter for letter, _ in result.not_replayable]
        notes = {letter.sequence: why for letter, why in result.not_replayable}
        _print_letters(f"{len(letters):,} not replayed (kept)", letters, limit, notes)
    for event_id in result.not_found:
        errors.print(f"[yellow]no dead letter for event {event_id!r}[/]")
    if not (result.replayed or result.not_replayable or result.not_found):
        console.print(f"no dead letters in {program}")
    if result.not_found or result.not_replayable:
        raise typer.Exit(1)


class Service(StrEnum):
    ingest = "ingest"
    scoring = "scoring"
    snapshots = "snapshots"


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_service(ctx: typer.Context, service: Annotated[Service, typer.Argument()]) -> None:
    """Run a service process in the foreground, configured by GAMIFY_* environment variables."""
    sys.argv = [f"gamify-{service.value}", *ctx.args]
    runpy.run_module(f"gamify.{service.value}", run_name="__main__", alter_sys=True)


@app.command("demo")
def demo(
    employees: Annotated[int, typer.Option(help="Synthetic employees per program.")] = 300,
    days: Annotated[int, typer.Option(help="Days of activity to simulate.")] = 6,
) -> None:
    """Run the whole pipeline on this machine with the example programs."""
    from gamify import local
    from gamify.demo import run_demo

    try:
        run_demo(console, employees=employees, days=days)
    except (local.LocalError, ProgramError, OSError) as exc:
        _fail(str(exc))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
