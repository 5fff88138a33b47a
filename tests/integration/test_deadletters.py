"""Dead letters read and replayed (gamify.deadletters, `gamify deadletters`), on the real NATS
JetStream and MariaDB: a replayed event is scored once, however often it is replayed; what
cannot be scored stays; nothing is replayed outside its program."""

from __future__ import annotations

import asyncio
import secrets

from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from gamify import deadletters
from gamify.cli import app
from gamify.deadletters import HEADER_EVENT_ID, HEADER_REASON, HEADER_SEQUENCE, HEADER_SUBJECT
from gamify.events import StreamEvent
from tests.integration.scoring_support import (
    MSG_ID,
    SCENARIO_SPEC,
    Target,
    provisioned,
    publish,
    pure_totals,
    query,
    running_workers,
    stream_event,
    wait_drained,
)
from tests.integration.test_scoring import inject_ledger_fault

WORKER = {"batch_size": 10, "max_deliver": 2, "retry_delay": 0.2}


def remove_ledger_fault(admin_url: str, schema: str) -> None:
    """The fix: the trigger inject_ledger_fault created is gone."""
    engine = create_engine(admin_url)
    with engine.begin() as connection:
        connection.execute(text(f"USE `{schema}`"))
        connection.execute(text("DROP TRIGGER inject_fault"))
    engine.dispose()


async def write_dead_letter(target: Target, event: StreamEvent, subject: str | None = None) -> None:
    """A dead letter as the worker writes one (subject: a forged original subject)."""
    await target.js.publish(
        target.names.dead_letter_subject(event.type),
        event.to_bytes(),
        headers={
            MSG_ID: f"deadletter-test-{secrets.token_hex(4)}",  # each call stores one
            HEADER_REASON: "written by the test [type=value_error]",  # as pydantic's reasons read
            HEADER_SUBJECT: subject or target.names.event_subject(event.type),
            HEADER_SEQUENCE: "1",
            HEADER_EVENT_ID: event.id,
        },
    )


def points(target: Target) -> dict[str, int]:
    return {user: int(p) for user, p in query(target.database_url, "SELECT user_id, points FROM users")}


def ledger_rows(target: Target, event_id: str) -> int:
    rows = query(target.database_url, "SELECT COUNT(*) FROM ledger WHERE event_id = :e", e=event_id)
    return int(rows[0][0])


async def test_a_dead_letter_replayed_after_the_fix_is_scored_once(
    nats_url: str, mysql_admin_url: str
) -> None:
    async with provisioned(SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
        names = target.names
        good = stream_event("g1", "activity.steps", "carol", "2027-01-05T12:00:00Z", steps=3000)
        refused = stream_event("p1", "activity.run", "carol", "2027-01-05T12:01:00Z", meters=5)
        inject_ledger_fault(mysql_admin_url, names.schema, "p1")
        await publish(target, [good, refused])
        junk = {MSG_ID: "junk-1"}
        await target.js.publish(names.event_subject("activity.steps"), b"{not json", headers=junk)
        async with running_workers(target, **WORKER) as workers:
            await wait_drained(target)
        assert workers[0].totals.dead_lettered == 2

        listed = {d.event_id: d for d in await deadletters.list_dead_letters(nats_url, names.program)}
        assert set(listed) == {"p1", "junk-1"} and listed["junk-1"].event is None
        assert "injected fault" in listed["p1"].reason and listed["p1"].event_type == "activity.run"
        assert listed["p1"].event == refused and listed["p1"].deliveries == 2
        assert points(target) == {"carol": pure_totals(target.program, [good])["carol"][0]}

        # The fix, then the replay: scored once, with what it would have earned at first.
        remove_ledger_fault(mysql_admin_url, names.schema)
        result = await deadletters.replay(nats_url, names.program, ["p1", "never-sent"])
        assert [d.event_id for d in result.replayed] == ["p1"] and result.not_found == ["never-sent"]
        async with running_workers(target, **WORKER):
            await wait_drained(target)
        assert ledger_rows(target, "p1") == 1
        assert points(target) == {"carol": pure_totals(target.program, [good, refused])["carol"][0]}

        # What is left: the body that is no event, kept (replaying cannot score it).
        result = await deadletters.replay(nats_url, names.program)
        assert result.replayed == [] and [d.event_id for d, _ in result.not_replayable] == ["junk-1"]
        remaining = await deadletters.list_dead_letters(nats_url, names.program)
        assert [d.event_id for d in remaining] == ["junk-1"]


async def test_replaying_an_event_already_scored_counts_it_once(nats_url: str, mysql_admin_url: str) -> None:
    """As after a replay interrupted between storing the event and deleting its dead letter,
    replayed again once the stream's duplicate window is over: the scorer's guard holds."""
    async with provisioned(SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
        event = stream_event("g2", "activity.steps", "dave", "2027-01-05T12:00:00Z", steps=4000)
        await publish(target, [event])
        async with running_workers(target, **WORKER):
            await wait_drained(target)
            before = points(target)
            told: list[tuple[int, int]] = []  # what the progress callback heard
            for _ in range(2):
                await write_dead_letter(target, event)
                told.clear()
                result = await deadletters.replay(
                    nats_url, target.names.program, progress=lambda done, total: told.append((done, total))
                )
                assert [d.event_id for d in result.replayed] == ["g2"] and told == [(1, 1)]
                await wait_drained(target)
        assert ledger_rows(target, "g2") == 1 and points(target) == before
        assert await deadletters.list_dead_letters(nats_url, target.names.program) == []


async def test_a_forged_original_subject_is_not_replayed_into_another_program(
    nats_url: str, mysql_admin_url: str
) -> None:
    async with (
        provisioned(SCENARIO_SPEC, nats_url, mysql_admin_url) as a,
        provisioned(SCENARIO_SPEC, nats_url, mysql_admin_url) as b,
    ):
        event = stream_event("x1", "activity.steps", "eve", "2027-01-05T12:00:00Z", steps=9000)
        await write_dead_letter(a, event, subject=b.names.event_subject("activity.steps"))
        result = await deadletters.replay(nats_url, a.names.program)
        assert result.replayed == []
        [(kept, why)] = result.not_replayable
        assert kept.event_id == "x1" and "not this program's subject" in why
        info = await b.js.stream_info(b.names.stream)
        assert info.state.messages == 0, "something reached the other program's stream"


async def test_cli_lists_and_replays_in_readable_tables(nats_url: str, mysql_admin_url: str) -> None:
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        outcome = runner.invoke(app, ["deadletters", *args], env={"COLUMNS": "100"})
        return outcome.exit_code, outcome.output

    async with provisioned(SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
        program = target.names.program
        code, output = await asyncio.to_thread(cli, "list", program)
        assert code == 0 and f"no dead letters in {program}" in output

        await write_dead_letter(target, stream_event("c1", "app.login", "fay", "2027-01-05T12:00:00Z"))
        code, output = await asyncio.to_thread(cli, "list", program)
        assert code == 0 and "c1" in output and "app.login" in output
        assert "written by the test [type=value_error]" in output, output  # printed, not read as markup
        for index in (2, 3):
            await write_dead_letter(
                target, stream_event(f"c{index}", "app.login", "fay", "2027-01-05T12:00:00Z")
            )
        code, output = await asyncio.to_thread(cli, "list", program, "--limit", "2")
        assert code == 0 and "3 dead letter(s)" in output and "… and 1 more" in output, output
        assert "c2" in output and "c3" not in output

        code, output = await asyncio.to_thread(cli, "replay", program)
        assert code == 2 and "--all" in output  # neither ids nor --all: nothing is done

        code, output = await asyncio.to_thread(cli, "replay", program, "c1", "nope")
        assert code == 1 and "1 replayed in" in output and "c1" in output and "'nope'" in output
        code, output = await asyncio.to_thread(cli, "replay", program, "--all")
        assert code == 0 and "2 replayed in" in output and "c3" in output, output
        code, output = await asyncio.to_thread(cli, "list", program, "--json")
        assert code == 0 and output.strip() == "[]"
