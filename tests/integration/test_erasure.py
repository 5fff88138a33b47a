"""Erasure of one employee (LGPD/GDPR) against the real NATS JetStream, MariaDB and GCS emulator.

Two programs share user ids (`alice` is an employee of both): erasing alice from program A must
remove her from A's tables, snapshot objects and stream, and leave every other user of A and
all of program B exactly as they were. Races are forced, not hoped for: a table lock holds
one side mid-transaction while the other is made to wait on the user's row lock.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import NotFoundError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from typer.testing import CliRunner

from gamify import local
from gamify.cli import app
from gamify.db import tables
from gamify.events import StreamEvent
from gamify.privacy.erase import ErasureReport, ErasureTarget, audit_log, erase_user
from gamify.privacy.rows import ERASED_USER
from gamify.rules.engine import RulesEngine
from gamify.scoring.store import BatchResult, create_scoring_engine, score_batch
from gamify.snapshots.writer import run_snapshot, snapshot_url
from gamify.storage import FileStore, open_store
from tests.integration import scoring_support as scoring

SPEC: dict[str, Any] = {
    "schedule": {"start": "2027-01-01T00:00:00Z", "end": "2027-02-01T00:00:00Z", "timezone": "UTC"},
    "mode": "both",
    "rules": [
        {"id": "steps", "event": "activity.steps", "points": 10, "unit": {"property": "steps", "size": 1000},
         "dailyCap": 100},
        {"id": "login", "event": "app.login", "points": 5},
    ],
    "badges": [{"id": "fifty", "name": "Fifty", "minPoints": 50}],
    "rewards": [{"id": "mug", "name": "Mug", "cost": 20, "stock": 2}],
    "leaderboards": [{"id": "overall", "window": "all-time", "size": 10}],
}  # fmt: skip
DAY = "2027-01-05T"
# Tables with a user_id column: every row of the erased user must go (events: anonymised).
USER_TABLES = ("events", "ledger", "users", "cap_counters", "rule_counts", "badges", "redemptions",
               "board_points")  # fmt: skip
# Written by snapshot runs or erasures, not by scoring: left out of "untouched" comparisons.
BOOKKEEPING = ("snapshot_runs", "erasures", "privacy_salt", "alembic_version")


def program_a_events() -> list[StreamEvent]:
    # Event ids never contain a user id, so a text search of the schema for "alice" means something.
    return [
        scoring.stream_event("e1", "activity.steps", "alice", DAY + "08:00:00Z", steps=8000),  # 80
        scoring.stream_event("e2", "app.login", "alice", DAY + "09:00:00Z"),  # 5 -> 85, badge fifty
        scoring.stream_event("e3", "reward.redeem", "alice", DAY + "10:00:00Z", reward="mug"),  # fulfilled
        scoring.stream_event("e4", "activity.steps", "bob", DAY + "08:30:00Z", steps=6000),  # 60
        scoring.stream_event("e5", "app.login", "bob", DAY + "09:30:00Z"),  # 5 -> 65, badge fifty
        scoring.stream_event("e6", "reward.redeem", "bob", DAY + "11:00:00Z", reward="mug"),  # the last mug
        scoring.stream_event("e7", "app.login", "carol", DAY + "12:00:00Z"),  # 5
    ]


def program_b_events() -> list[StreamEvent]:
    return [
        scoring.stream_event("f1", "activity.steps", "alice", DAY + "08:00:00Z", steps=3000),  # 30
        scoring.stream_event("f2", "activity.steps", "bob", DAY + "08:00:00Z", steps=5000),  # 50
    ]


def dump(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every scoring table of a schema, sorted: what "untouched" is compared on."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                table.name: sorted(
                    (tuple(row) for row in connection.execute(table.select())), key=lambda row: repr(row)
                )
                for table in tables.metadata.sorted_tables
                if table.name not in BOOKKEEPING
            }
    finally:
        engine.dispose()


def without_user(before: dict[str, list[tuple[Any, ...]]], user: str) -> dict[str, list[tuple[Any, ...]]]:
    """What `dump` must show after erasing `user`: their rows gone, their events anonymised."""
    expected: dict[str, list[tuple[Any, ...]]] = {}
    for name, rows in before.items():
        if name not in USER_TABLES:
            expected[name] = rows
            continue
        column = [c.name for c in tables.metadata.tables[name].columns].index("user_id")
        if name == "events":
            columns = [c.name for c in tables.events.columns]
            props, source = columns.index("properties"), columns.index("source")
            anonymised = []
            for row in rows:
                if row[column] == user:
                    row = tuple(
                        ERASED_USER if i == column else None if i in (props, source) else value
                        for i, value in enumerate(row)
                    )
                anonymised.append(row)
            expected[name] = sorted(anonymised, key=lambda row: repr(row))
        else:
            expected[name] = [row for row in rows if row[column] != user]
    return expected


def rows_of(before: dict[str, list[tuple[Any, ...]]], table: str, user: str) -> int:
    column = [c.name for c in tables.metadata.tables[table].columns].index("user_id")
    return sum(1 for row in before[table] if row[column] == user)


async def stream_bodies(target: scoring.Target) -> list[dict[str, Any]]:
    """Every message still in the program's stream, as (subject, body) dicts."""
    info = await target.js.stream_info(target.names.stream)
    bodies = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await target.js.get_msg(target.names.stream, seq)
        except NotFoundError:
            continue
        bodies.append({"subject": msg.subject, "body": json.loads(msg.data or b"{}")})
    return bodies


def users_in_stream(bodies: list[dict[str, Any]]) -> list[str]:
    return sorted(item["body"].get("user") for item in bodies)


async def dead_letter(target: scoring.Target, event: StreamEvent) -> None:
    """A dead letter as the worker writes one: the original body on the deadletter subject."""
    await target.js.publish(
        target.names.dead_letter_subject(event.type),
        event.to_bytes(),
        headers={scoring.MSG_ID: f"deadletter-{event.id}", "Gamify-Reason": "test"},
        stream=target.names.stream,
    )


def erasure_target(target: scoring.Target, bucket_url: str) -> ErasureTarget:
    return ErasureTarget(
        target.program.name,
        target.database_url,
        snapshot_url(target.program, bucket_url),
        target.nats_url,
    )


async def erase(target: scoring.Target, bucket_url: str, user: str, **options: Any) -> ErasureReport:
    return await asyncio.to_thread(
        erase_user, erasure_target(target, bucket_url), user, "dpo@acme", **options
    )


async def scored(target: scoring.Target, events: list[StreamEvent]) -> None:
    await scoring.publish(target, events)
    async with scoring.running_workers(target, batch_size=50):
        await scoring.wait_drained(target)


@asynccontextmanager
async def two_programs(
    nats_url: str, mysql_admin_url: str
) -> AsyncIterator[tuple[scoring.Target, scoring.Target]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(scoring.provisioned(SPEC, nats_url, mysql_admin_url))
        b = await stack.enter_async_context(scoring.provisioned(SPEC, nats_url, mysql_admin_url))
        yield a, b


# -- everything about one user, nothing about anyone else ------------------------------------


async def test_erasure_removes_one_user_of_one_program_and_nothing_else(
    nats_url: str, mysql_admin_url: str, gcs_bucket: str
) -> None:
    bucket = f"gs://{gcs_bucket}/programs"
    async with two_programs(nats_url, mysql_admin_url) as (a, b):
        await scored(a, program_a_events())
        await scored(b, program_b_events())
        alice_letter = scoring.stream_event("e9", "activity.steps", "alice", DAY + "13:00:00Z", steps=1)
        await dead_letter(a, alice_letter)
        await dead_letter(a, scoring.stream_event("e8", "activity.steps", "bob", DAY + "13:00:00Z", steps=1))
        for target in (a, b):
            await asyncio.to_thread(run_snapshot, target.program, target.database_url, bucket)
        store_a = open_store(snapshot_url(a.program, bucket))
        store_b = open_store(snapshot_url(b.program, bucket))
        assert store_a.get("users/alice.json") is not None
        before_a, before_b = dump(a.database_url), dump(b.database_url)
        stream_b = await stream_bodies(b)

        report = await erase(a, bucket, "alice")

        # Exactly alice's rows went, and the report counts them.
        assert dump(a.database_url) == without_user(before_a, "alice")
        assert report.counts == {
            "events": 3,
            "ledger": rows_of(before_a, "ledger", "alice"),
            "balances": 1,
            "badges": 1,
            "redemptions": 1,
            "capCounters": rows_of(before_a, "cap_counters", "alice"),
            "ruleCounts": 2,
            "boardPoints": rows_of(before_a, "board_points", "alice"),
            "snapshotObjects": 1,
            "streamMessages": 4,  # three events and one dead letter
        }
        assert report.counts["ledger"] == 3 and report.counts["boardPoints"] == 2  # her day and week
        assert report.previous_erasures == 0 and not report.nothing_left
        assert "alice" not in repr(dump(a.database_url))
        # The mug alice redeemed was handed out: it is not returned to the catalog.
        assert scoring.query(a.database_url, "SELECT stock, redeemed FROM reward_stock") == [(2, 2)]
        # Program B, the same user ids: untouched everywhere.
        assert dump(b.database_url) == before_b
        assert await stream_bodies(b) == stream_b
        assert store_b.get("users/alice.json") is not None
        # The stream of A keeps everyone else's messages, dead letters included.
        bodies = await stream_bodies(a)
        assert users_in_stream(bodies) == ["bob", "bob", "bob", "bob", "carol"]
        assert any(".deadletter." in item["subject"] for item in bodies)

        # Bucket: alice's object is gone now; the next snapshot drops her from the board, the
        # others close up, and nothing writes her object again.
        assert store_a.get("users/alice.json") is None
        await asyncio.to_thread(run_snapshot, a.program, a.database_url, bucket)
        board = json.loads(store_a.get("leaderboards/overall.json") or b"{}")
        assert [(e["rank"], e["user"], e["points"]) for e in board["entries"]] == [
            (1, "bob", 65),
            (2, "carol", 5),
        ]
        assert board["participants"] == 2
        assert json.loads(store_a.get("users/bob.json") or b"{}")["ranks"] == {"overall": 1}
        assert store_a.get("users/alice.json") is None
        catalog = json.loads(store_a.get("catalog.json") or b"{}")
        assert catalog["rewards"][0]["remaining"] == 0

        # A second erasure finds nothing left, and says so in the audit log too.
        again = await erase(a, bucket, "alice")
        assert again.nothing_left and again.previous_erasures == 1
        assert again.user_hash == report.user_hash

        # The audit log: who, when, counts, a salted hash, never the id itself.
        entries = audit_log(a.database_url)
        assert [entry.id for entry in entries] == [report.erasure_id, again.erasure_id]
        assert all(entry.finished_at is not None and entry.requested_by == "dpo@acme" for entry in entries)
        assert entries[0].counts == report.counts
        assert "alice" not in repr(scoring.query(a.database_url, "SELECT * FROM erasures"))
        assert [e.id for e in audit_log(a.database_url, "alice")] == [report.erasure_id, again.erasure_id]
        assert audit_log(a.database_url, "bob") == []
        assert audit_log(b.database_url) == []

        # Alice's old events re-sent after the stream's dedupe window, and a new one: none is
        # scored, and nothing of hers comes back.
        ledger_before = scoring.query(a.database_url, "SELECT COUNT(*) FROM ledger")
        old = program_a_events()[:2]
        new = scoring.stream_event("e10", "app.login", "alice", DAY + "14:00:00Z")
        await scoring.publish(a, [*old, new], msg_ids=["e1-resent", "e2-resent", "e10"])
        await scoring.publish(a, [scoring.stream_event("e11", "app.login", "carol", DAY + "14:00:00Z")])
        async with scoring.running_workers(a, batch_size=50):
            await scoring.wait_drained(a)
        assert scoring.query(a.database_url, "SELECT user_id FROM users ORDER BY user_id") == [
            ("bob",),
            ("carol",),
        ]
        assert scoring.query(a.database_url, "SELECT COUNT(*) FROM ledger") == [(ledger_before[0][0] + 1,)]
        assert scoring.query(a.database_url, "SELECT COUNT(*) FROM events WHERE event_id = 'e10'") == [(0,)]
        assert "alice" not in repr(dump(a.database_url))
        # Those late messages still sit in the stream until erased again (docs/operations.md).
        third = await erase(a, bucket, "alice")
        assert third.counts["streamMessages"] == 3 and third.removed == 3
        assert "alice" not in users_in_stream(await stream_bodies(a))


async def test_a_user_the_database_never_saw_is_erased_from_the_stream(
    nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    """Events accepted but not yet scored: only the stream holds them; erasing must find them
    there, and the scorer must never score them afterwards."""
    bucket = (tmp_path / "bucket").as_uri()
    async with scoring.provisioned(SPEC, nats_url, mysql_admin_url) as a:
        pending = [
            scoring.stream_event("p1", "app.login", "dora", DAY + "08:00:00Z"),
            scoring.stream_event("p2", "app.login", "bob", DAY + "08:00:00Z"),
        ]
        await scoring.publish(a, pending)
        report = await erase(a, bucket, "dora")
        assert report.counts["streamMessages"] == 1 and report.removed == 1
        assert users_in_stream(await stream_bodies(a)) == ["bob"]
        # Had the worker fetched dora's event before the deletion, it would skip it: replay it.
        await scoring.publish(a, [pending[0]], msg_ids=["p1-late"])
        async with scoring.running_workers(a, batch_size=10) as workers:
            await scoring.wait_drained(a)
        assert scoring.query(a.database_url, "SELECT user_id, points FROM users") == [("bob", 5)]
        # Counted as skipped for an erased user, neither scored nor a duplicate.
        assert (workers[0].totals.scored, workers[0].totals.erased) == (1, 1)


# -- races with the scorer --------------------------------------------------------------------


def _waiting(admin_url: str, schema: str, *, row_locks: int = 0, table_locks: int = 0) -> bool:
    """Whether at least `row_locks` transactions of the program's user wait for an InnoDB row
    lock, and `table_locks` sessions on its schema wait for a table (metadata) lock.

    Row-lock waits are read from SHOW ENGINE INNODB STATUS: information_schema.INNODB_TRX was
    seen listing only the inspecting account's own transactions on this MariaDB."""
    engine = create_engine(admin_url)
    try:
        with engine.connect() as connection:
            status = str(connection.exec_driver_sql("SHOW ENGINE INNODB STATUS").one()[2])
            metadata = connection.execute(
                text(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE DB = :db AND STATE LIKE 'Waiting for table%'"
                ),
                {"db": schema},
            ).scalar()
        # One block per transaction: "---TRANSACTION <id>, ACTIVE ... LOCK WAIT ... <host> <user> ...".
        transactions = status.split("---TRANSACTION ")[1:]
        lock_waits = sum(1 for block in transactions if "LOCK WAIT" in block and f" {schema} " in block)
        return lock_waits >= row_locks and int(metadata or 0) >= table_locks
    finally:
        engine.dispose()


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class TableLock:
    """`LOCK TABLES <table> WRITE` from another session: whoever reaches that table waits."""

    def __init__(self, admin_url: str, schema: str, table: str) -> None:
        self.engine = create_engine(admin_url)
        self.connection: Connection = self.engine.connect()
        self.connection.execute(text(f"USE `{schema}`"))
        self.connection.execute(text(f"LOCK TABLES `{table}` WRITE"))

    def release(self) -> None:
        self.connection.execute(text("UNLOCK TABLES"))
        self.connection.close()
        self.engine.dispose()


def _score_in_thread(target: scoring.Target, events: list[StreamEvent]) -> tuple[threading.Thread, list[Any]]:
    engine = create_scoring_engine(target.database_url)
    rules = RulesEngine(target.program.spec)
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append(score_batch(engine, rules, [(event, 1000 + n) for n, event in enumerate(events)]))
        except BaseException as exc:  # handed to the test
            outcome.append(exc)
        finally:
            engine.dispose()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, outcome


def _erase_in_thread(target: scoring.Target, bucket: str, user: str) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append(erase_user(erasure_target(target, bucket), user, "dpo@acme"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    return thread, outcome


def _result(thread: threading.Thread, outcome: list[Any]) -> Any:
    thread.join(timeout=60)
    assert not thread.is_alive(), "still blocked"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


async def test_a_batch_waiting_on_the_erasure_does_not_resurrect_the_user(
    nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    """The erasure holds alice's row lock, mid-transaction; a scoring batch with a new event of
    hers waits on that lock. Once the erasure commits, the batch must score nothing of hers."""
    bucket = (tmp_path / "bucket").as_uri()
    async with scoring.provisioned(SPEC, nats_url, mysql_admin_url) as a:
        schema = a.names.schema
        await scored(a, program_a_events())
        held = TableLock(mysql_admin_url, schema, "erasures")  # the erasure's last table
        try:
            eraser = _erase_in_thread(a, bucket, "alice")
            _wait_until(lambda: _waiting(mysql_admin_url, schema, table_locks=1), "the erasure to wait")
            late = [
                scoring.stream_event("n1", "activity.steps", "alice", DAY + "15:00:00Z", steps=9000),
                scoring.stream_event("n2", "app.login", "bob", DAY + "15:00:00Z"),
            ]
            scorer = _score_in_thread(a, late)
            _wait_until(lambda: _waiting(mysql_admin_url, schema, row_locks=1), "the batch to wait on alice")
        finally:
            held.release()
        report = _result(*eraser)
        batch: BatchResult = _result(*scorer)
        assert report.counts["ledger"] == 3
        assert batch.erased == ["n1"] and batch.scored == 1 and batch.points == 5
        assert scoring.query(a.database_url, "SELECT user_id, points FROM users ORDER BY user_id") == [
            ("bob", 70),
            ("carol", 5),
        ]
        assert "alice" not in repr(dump(a.database_url))


async def test_an_erasure_waiting_on_a_batch_erases_what_the_batch_wrote(
    nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    """The other order: a batch holds alice's row lock mid-transaction and the erasure waits;
    once the batch commits, the erasure removes its rows too."""
    bucket = (tmp_path / "bucket").as_uri()
    async with scoring.provisioned(SPEC, nats_url, mysql_admin_url) as a:
        schema = a.names.schema
        await scored(a, program_a_events())
        held = TableLock(mysql_admin_url, schema, "board_points")  # the batch's last table
        try:
            scorer = _score_in_thread(
                a, [scoring.stream_event("n1", "app.login", "alice", DAY + "15:00:00Z")]
            )
            _wait_until(lambda: _waiting(mysql_admin_url, schema, table_locks=1), "the batch to wait")
            eraser = _erase_in_thread(a, bucket, "alice")
            _wait_until(
                lambda: _waiting(mysql_admin_url, schema, row_locks=1), "the erasure to wait on alice"
            )
        finally:
            held.release()
        batch: BatchResult = _result(*scorer)
        report = _result(*eraser)
        assert batch.scored == 1 and batch.erased == []
        assert report.counts["ledger"] == 4 and report.counts["events"] == 4  # the batch's too
        assert "alice" not in repr(dump(a.database_url))


async def test_erasure_during_continuous_scoring(nats_url: str, mysql_admin_url: str, tmp_path: Path) -> None:
    """Workers score a steady stream of three users' events while alice is erased: afterwards
    nothing of alice is left (database or stream) and the others' totals are exact."""
    bucket = (tmp_path / "bucket").as_uri()
    async with scoring.provisioned(SPEC, nats_url, mysql_admin_url) as a:
        events = [
            scoring.stream_event(
                f"c{n}-{index}", "app.login", user, f"2027-01-{1 + n % 28:02d}T10:{n % 60:02d}:00Z"
            )
            for n in range(150)
            for index, user in enumerate(("alice", "bob", "carol"))
        ]
        await scoring.publish(a, events)
        async with scoring.running_workers(a, count=2, batch_size=10):
            deadline = time.monotonic() + 20
            while scoring.query(a.database_url, "SELECT COUNT(*) FROM events")[0][0] < 60:
                assert time.monotonic() < deadline, "scoring did not start"
                await asyncio.sleep(0.02)
            report = await erase(a, bucket, "alice")
            await scoring.wait_drained(a)
        assert report.counts["streamMessages"] > 0 and report.counts["ledger"] > 0
        assert "alice" not in repr(dump(a.database_url))
        assert "alice" not in users_in_stream(await stream_bodies(a))
        others = [event for event in events if event.user != "alice"]
        expected = scoring.pure_totals(a.program, others)
        totals = scoring.query(a.database_url, "SELECT user_id, points, spent FROM users ORDER BY user_id")
        assert {user: (points, spent) for user, points, spent in totals} == expected


# -- the snapshot writer ------------------------------------------------------------------------


class PausingStore(FileStore):
    """A file store whose upload of one key waits until the test lets it go."""

    def __init__(self, root: Path, key: str) -> None:
        super().__init__(root)
        self.key = key
        self.reached = threading.Event()
        self.go = threading.Event()

    def put(self, key: str, data: bytes, *args: Any, **kwargs: Any) -> None:
        if key == self.key:
            self.reached.set()
            assert self.go.wait(30), "never released"
        super().put(key, data, *args, **kwargs)


async def test_a_snapshot_run_in_progress_cannot_write_the_erased_user_back(
    nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    async with scoring.provisioned(SPEC, nats_url, mysql_admin_url) as a:
        await scored(a, program_a_events())
        bucket = (tmp_path / "bucket").as_uri()
        root = Path(open_store(snapshot_url(a.program, bucket)).base_url.removeprefix("file://"))
        store = PausingStore(root, "users/alice.json")
        # The run read alice before the erasure started, and is about to upload her object.
        run = asyncio.create_task(
            asyncio.to_thread(run_snapshot, a.program, a.database_url, bucket, store=store)
        )
        assert await asyncio.to_thread(store.reached.wait, 20)
        eraser = _erase_in_thread(a, bucket, "alice")
        await asyncio.sleep(1.0)
        assert not eraser[1], "the erasure did not wait for the snapshot run"
        store.go.set()
        await run
        assert store.get("users/alice.json") is not None  # written by the run, then ...
        report = _result(*eraser)
        assert report.counts["snapshotObjects"] == 1
        assert store.get("users/alice.json") is None  # ... deleted by the erasure
        await asyncio.to_thread(run_snapshot, a.program, a.database_url, bucket)
        assert store.get("users/alice.json") is None
        board = json.loads(store.get("leaderboards/overall.json") or b"{}")
        assert "alice" not in [entry["user"] for entry in board["entries"]]


# -- the command line ---------------------------------------------------------------------------


async def test_cli_users_erase_and_audit_log(
    nats_url: str, mysql_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAMIFY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GAMIFY_NATS_URL", nats_url)
    bucket = (tmp_path / "bucket").as_uri()
    async with scoring.provisioned(SPEC, nats_url, mysql_admin_url) as a:
        await scored(a, program_a_events())
        name = a.program.name
        local.save_state(
            local.LocalState(
                program=name,
                tenant="acme",
                api_key="unused",
                db_password="unused",
                database_url=a.database_url,
                snapshot_url=snapshot_url(a.program, bucket),
                bucket=bucket,
            )
        )
        runner = CliRunner()

        def cli(*args: str, answer: str | None = None) -> Any:
            return runner.invoke(app, list(args), input=answer)

        refused = await asyncio.to_thread(cli, "users", "erase", name, "alice", answer="n\n")
        assert refused.exit_code == 1
        assert scoring.query(a.database_url, "SELECT COUNT(*) FROM users WHERE user_id = 'alice'") == [(1,)]

        erased = await asyncio.to_thread(
            cli, "users", "erase", name, "alice", "--yes", "--json", "--by", "dpo"
        )
        assert erased.exit_code == 0, erased.output
        answer = json.loads(erased.output)
        assert answer["program"] == name and answer["requestedBy"] == "dpo"
        assert answer["counts"]["ledger"] == 3 and answer["counts"]["streamMessages"] == 3
        assert answer["nothingLeft"] is False

        again = await asyncio.to_thread(cli, "users", "erase", name, "alice", "--yes")
        assert again.exit_code == 0, again.output
        assert "nothing left to erase" in again.output and "ledger" in again.output

        listed = await asyncio.to_thread(cli, "users", "erasures", name)
        assert listed.exit_code == 0, listed.output
        assert f"erasures in {name}" in listed.output and "ledger 3" in listed.output
        assert "alice" not in listed.output
        proof = await asyncio.to_thread(cli, "users", "erasures", name, "--user", "alice", "--json")
        assert [entry["id"] for entry in json.loads(proof.output)] == [
            answer["erasureId"],
            answer["erasureId"] + 1,
        ]

        invalid = await asyncio.to_thread(cli, "users", "erase", name, "../etc", "--yes")
        assert invalid.exit_code == 1 and "not a valid user id" in invalid.output

        # NATS unreachable: the rows go, the stream cannot be read: one line says run it again,
        # and the second run finishes the job (the stream messages are still there for it).
        monkeypatch.setenv("GAMIFY_NATS_URL", "nats://127.0.0.1:1")
        broken = await asyncio.to_thread(cli, "users", "erase", name, "bob", "--yes")
        assert broken.exit_code == 1 and isinstance(broken.exception, SystemExit)  # not a crash
        assert "run it again" in broken.output and "Traceback" not in broken.output, broken.output
        monkeypatch.setenv("GAMIFY_NATS_URL", nats_url)
        finished = await asyncio.to_thread(cli, "users", "erase", name, "bob", "--yes", "--json")
        assert finished.exit_code == 0, finished.output
        assert json.loads(finished.output)["counts"]["streamMessages"] == 3
