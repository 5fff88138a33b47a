"""The snapshot writer against real MariaDB and the GCS emulator (real client) or `file://`.

Each test gets its own program schema (migrated by `gamify.db.migrate`), fills it the way the
scorer would, publishes, and reads every object back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from gamify.db import migrate, tables
from gamify.naming import ProgramNames
from gamify.program import Program, dump_program, parse_program
from gamify.snapshots.__main__ import main
from gamify.snapshots.writer import (
    MANIFEST_CACHE_CONTROL,
    PUBLIC_CACHE_CONTROL,
    USER_CACHE_CONTROL,
    run_periodic,
    run_snapshot,
)
from gamify.storage import ObjectStore, join_url, open_store
from tests.conftest import unique_program_id

NOW = datetime(2027, 1, 6, 15, 0, tzinfo=UTC)  # Wednesday Jan 6, 12:00 in São Paulo
TODAY, YESTERDAY, WEEK = "d:2027-01-06", "d:2027-01-05", "w:2027-W01"


def make_program(program_id: str, mode: str = "both", boards: list[dict[str, Any]] | None = None) -> Program:
    spec: dict[str, Any] = {
        "tenant": "acme",
        "schedule": {
            "start": "2027-01-01T00:00:00-03:00",
            "end": "2027-02-01T00:00:00-03:00",
            "timezone": "America/Sao_Paulo",
        },
        "mode": mode,
        "rules": [{"id": "steps", "event": "activity.steps", "points": 10}],
        "badges": [{"id": "first-100", "name": "100 club", "minPoints": 100}],
    }
    if mode != "rewards":
        spec["leaderboards"] = boards or [
            {"id": "overall", "window": "all-time", "size": 2},
            {"id": "today", "window": "daily"},
            {"id": "week", "window": "weekly"},
        ]
    if mode != "ranking":
        spec["rewards"] = [
            {"id": "mug", "name": "Mug", "cost": 100, "stock": 5},
            {"id": "day-off", "name": "Day off", "cost": 1000},
        ]
    return parse_program(
        {
            "apiVersion": "gamification.io/v1alpha1",
            "kind": "GamificationProgram",
            "metadata": {"name": program_id},
            "spec": spec,
        }
    )


@dataclass
class ProgramDb:
    program_id: str
    url: str
    engine: sa.Engine

    def user(self, user: str, points: int, spent: int = 0, rev: int = 1, **windows: int) -> None:
        with self.engine.begin() as c:
            c.execute(
                tables.users.insert().values(
                    user_id=user, points=points, spent=spent, rev=rev, published_rev=0, updated_at=_naive(NOW)
                )
            )
            self._board(c, user, {_key(k): v for k, v in windows.items()})

    def change(self, user: str, points: int, **windows: int) -> None:
        """What the scorer does: new totals, board points, rev + 1."""
        with self.engine.begin() as c:
            c.execute(
                tables.users.update()
                .where(tables.users.c.user_id == user)
                .values(points=points, rev=tables.users.c.rev + 1)
            )
            self._board(c, user, {_key(k): v for k, v in windows.items()})

    def _board(self, c: sa.Connection, user: str, points: dict[str, int]) -> None:
        for key, value in points.items():
            c.execute(
                tables.board_points.delete().where(
                    tables.board_points.c.user_id == user, tables.board_points.c.window_key == key
                )
            )
            c.execute(tables.board_points.insert().values(window_key=key, user_id=user, points=value))

    def rows(self, table: sa.Table) -> list[Any]:
        with self.engine.connect() as c:
            return list(c.execute(sa.select(table)))

    def published(self) -> dict[str, tuple[int, int, Any]]:
        users = tables.users
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(users.c.user_id, users.c.rev, users.c.published_rev, users.c.published_ranks)
            )
            return {r.user_id: (r.rev, r.published_rev, r.published_ranks) for r in rows}


def _key(name: str) -> str:
    return {"today": TODAY, "yesterday": YESTERDAY, "week": WEEK}[name]


def _naive(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(tzinfo=None)


@pytest.fixture
def db(mysql_admin_url: str) -> Iterator[ProgramDb]:
    program_id = unique_program_id("snap")
    schema = ProgramNames(program_id).schema
    admin = sa.create_engine(mysql_admin_url)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE DATABASE `{schema}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    url = sa.make_url(mysql_admin_url).set(database=schema).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    try:
        migrate.upgrade(url)
        yield ProgramDb(program_id, url, engine)
    finally:
        engine.dispose()
        with admin.begin() as c:
            c.execute(sa.text(f"DROP DATABASE IF EXISTS `{schema}`"))
        admin.dispose()


@pytest.fixture(params=["gs", "file"])
def bucket_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "gs":
        return f"gs://{request.getfixturevalue('gcs_bucket')}/snapshots"
    return (tmp_path / "bucket").as_uri()


class RecordingStore(ObjectStore):
    """A real store that records the order of writes (and can run a hook before each)."""

    def __init__(self, inner: ObjectStore, before_put: Any = None) -> None:
        self.inner = inner
        self.base_url = inner.base_url
        self.puts: list[str] = []
        self.before_put = before_put
        self._lock = threading.Lock()

    def put(
        self, key: str, data: bytes, content_type: str = "application/json", cache_control: str = ""
    ) -> None:
        if self.before_put:
            self.before_put(key)
        self.inner.put(key, data, content_type, cache_control)
        with self._lock:
            self.puts.append(key)

    def put_if_absent(self, key: str, data: bytes, content_type: str = "", cache_control: str = "") -> bool:
        return self.inner.put_if_absent(key, data, content_type, cache_control)

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def stat(self, key: str) -> Any:
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def delete_prefix(self, prefix: str = "") -> int:
        return self.inner.delete_prefix(prefix)


def read(store: ObjectStore, key: str) -> Any:
    data = store.get(key)
    assert data is not None, f"{key} was not written"
    return orjson.loads(data)


def fill(db: ProgramDb) -> None:
    """alice 300 (spent 100), bob and carol 200, dave 10, erin 5; events up to stream seq 42."""
    db.user("alice", 300, spent=100, today=50, week=300)
    db.user("bob", 200, yesterday=200, week=200)
    db.user("carol", 200, today=20, week=200)
    db.user("dave", 10)
    db.user("erin", 5)
    at = _naive(NOW - timedelta(hours=1))
    with db.engine.begin() as c:
        c.execute(
            tables.badges.insert().values(
                user_id="alice", badge_id="first-100", event_id="e-5", awarded_at=at
            )
        )
        c.execute(
            tables.redemptions.insert(),
            [
                {
                    "event_id": "r-1",
                    "user_id": "alice",
                    "reward_id": "mug",
                    "status": "fulfilled",
                    "reason": None,
                    "cost": 100,
                    "occurred_at": at,
                    "created_at": at,
                },
                {
                    "event_id": "r-2",
                    "user_id": "alice",
                    "reward_id": "day-off",
                    "status": "rejected",
                    "reason": "insufficient balance",
                    "cost": 1000,
                    "occurred_at": at + timedelta(minutes=1),
                    "created_at": at,
                },
            ],
        )
        c.execute(tables.reward_stock.insert().values(reward_id="mug", stock=5, redeemed=1))
        c.execute(
            tables.events.insert(),
            [
                {
                    "event_id": f"e-{seq}",
                    "type": "activity.steps",
                    "user_id": "alice",
                    "occurred_at": at,
                    "received_at": at,
                    "properties": {},
                    "stream_seq": seq,
                    "scored_at": at,
                }
                for seq in (7, 42, 13)
            ],
        )


def user_generations(store: ObjectStore) -> dict[str, int]:
    generations = {}
    for key in store.list("users/"):
        info = store.stat(key)
        assert info is not None
        generations[key] = info.generation
    return generations


def test_snapshot_publishes_every_object(db: ProgramDb, bucket_url: str, gcs_client: Any) -> None:
    fill(db)
    program = make_program(db.program_id)
    store = RecordingStore(open_store(join_url(bucket_url, db.program_id)))

    report = run_snapshot(program, db.url, bucket_url, now=NOW, store=store)

    assert report.program == db.program_id
    assert report.users_written == 5
    assert report.files_written == 3 + 1 + 5 + 1  # boards, catalog, users, manifest
    assert report.last_scored_position == 42
    assert report.snapshot_url == f"{bucket_url}/{db.program_id}/"
    generated = "2027-01-06T15:00:00.000Z"

    assert read(store, "leaderboards/overall.json") == {
        "board": "overall",
        "window": "all-time",
        "generatedAt": generated,
        "participants": 5,
        "entries": [{"rank": 1, "user": "alice", "points": 300}, {"rank": 2, "user": "bob", "points": 200}],
    }
    today = read(store, "leaderboards/today.json")
    assert today["window"] == "daily"
    assert today["participants"] == 2  # bob's points are yesterday's
    assert today["entries"] == [
        {"rank": 1, "user": "alice", "points": 50},
        {"rank": 2, "user": "carol", "points": 20},
    ]
    week = read(store, "leaderboards/week.json")
    assert [(e["rank"], e["user"]) for e in week["entries"]] == [(1, "alice"), (2, "bob"), (2, "carol")]

    assert read(store, "users/alice.json") == {
        "user": "alice",
        "points": 300,
        "balance": 200,
        "ranks": {"overall": 1, "today": 1, "week": 1},
        "badges": ["first-100"],
        "redemptions": [
            {"id": "r-1", "reward": "mug", "status": "fulfilled"},
            {"id": "r-2", "reward": "day-off", "status": "rejected", "reason": "insufficient balance"},
        ],
        "updatedAt": generated,
    }
    assert read(store, "users/bob.json")["ranks"] == {"overall": 2, "today": None, "week": 2}
    assert read(store, "users/carol.json")["ranks"] == {"overall": 2, "today": 2, "week": 2}
    assert read(store, "users/erin.json") == {
        "user": "erin",
        "points": 5,
        "balance": 5,
        "ranks": {"overall": 5, "today": None, "week": None},
        "badges": [],
        "redemptions": [],
        "updatedAt": generated,
    }
    assert read(store, "catalog.json") == {
        "rewards": [
            {"id": "mug", "name": "Mug", "cost": 100, "remaining": 4},
            {"id": "day-off", "name": "Day off", "cost": 1000, "remaining": None},
        ]
    }
    manifest = read(store, "manifest.json")
    data_files = sorted(
        ["leaderboards/overall.json", "leaderboards/today.json", "leaderboards/week.json", "catalog.json"]
        + [f"users/{u}.json" for u in ("alice", "bob", "carol", "dave", "erin")]
    )
    assert manifest == {
        "version": report.version,
        "generatedAt": generated,
        "program": db.program_id,
        "schedule": {
            "start": "2027-01-01T03:00:00.000Z",
            "end": "2027-02-01T03:00:00.000Z",
            "timezone": "America/Sao_Paulo",
        },
        "lastScoredPosition": 42,
        "windows": {"overall": "all", "today": TODAY, "week": WEEK},
        "files": data_files,
        "counts": {"users": 5, "usersWritten": 5, "leaderboards": 3, "rewards": 2, "files": 9},
    }
    # The manifest is written last, after every object it lists.
    assert store.puts[-1] == "manifest.json"
    assert sorted(store.puts[:-1]) == data_files
    assert sorted(store.list()) == sorted([*data_files, "manifest.json"])

    # Headers (the file store has none to check).
    if bucket_url.startswith("gs://"):
        expected = {"manifest.json": MANIFEST_CACHE_CONTROL, "catalog.json": PUBLIC_CACHE_CONTROL}
        expected.update({k: PUBLIC_CACHE_CONTROL for k in data_files if k.startswith("leaderboards/")})
        expected.update({k: USER_CACHE_CONTROL for k in data_files if k.startswith("users/")})
        for key, cache_control in expected.items():
            info = store.stat(key)
            assert info is not None
            assert (key, info.content_type, info.cache_control) == (key, "application/json", cache_control)

    runs = db.rows(tables.snapshot_runs)
    assert [(r.version, r.last_stream_seq, r.users_written, r.files_written) for r in runs] == [
        (report.version, 42, 5, 10)
    ]
    assert {u: (rev, published) for u, (rev, published, _) in db.published().items()} == {
        u: (1, 1) for u in ("alice", "bob", "carol", "dave", "erin")
    }
    assert db.published()["bob"][2] == {"overall": 2, "week": 2}


def test_only_changed_users_are_rewritten(db: ProgramDb, bucket_url: str, gcs_client: Any) -> None:
    fill(db)
    program = make_program(db.program_id)
    store = open_store(join_url(bucket_url, db.program_id))
    first = run_snapshot(program, db.url, bucket_url, now=NOW)
    before = user_generations(store)

    # Nothing changed: no user file is written again.
    recording = RecordingStore(store)
    second = run_snapshot(program, db.url, bucket_url, now=NOW + timedelta(minutes=1), store=recording)
    assert second.users_written == 0
    assert second.version == first.version + 1
    assert not [k for k in recording.puts if k.startswith("users/")]
    assert user_generations(store) == before
    assert read(store, "manifest.json")["files"] == [
        "catalog.json",
        "leaderboards/overall.json",
        "leaderboards/today.json",
        "leaderboards/week.json",
    ]

    # erin changes below the top: exactly erin is rewritten.
    db.change("erin", 8)
    recording = RecordingStore(store)
    third = run_snapshot(program, db.url, bucket_url, now=NOW + timedelta(minutes=2), store=recording)
    assert third.users_written == 1
    assert [k for k in recording.puts if k.startswith("users/")] == ["users/erin.json"]
    after = user_generations(store)
    assert {k for k in after if after[k] != before[k]} == {"users/erin.json"}
    assert read(store, "users/erin.json")["points"] == 8

    # dave jumps to 250 all-time: overall becomes alice 1, dave 2, bob 3, carol 3. Bob and carol
    # were published at rank 2 (inside size 2) and dropped out: rewritten. Erin stays 5: not.
    db.change("dave", 250)
    recording = RecordingStore(store)
    fourth = run_snapshot(program, db.url, bucket_url, now=NOW + timedelta(minutes=3), store=recording)
    written = sorted(k for k in recording.puts if k.startswith("users/"))
    assert written == ["users/bob.json", "users/carol.json", "users/dave.json"]
    assert fourth.users_written == 3
    assert read(store, "users/bob.json")["ranks"] == {"overall": 3, "today": None, "week": 2}
    assert read(store, "users/dave.json")["ranks"] == {"overall": 2, "today": None, "week": None}
    assert read(store, "leaderboards/overall.json")["entries"] == [
        {"rank": 1, "user": "alice", "points": 300},
        {"rank": 2, "user": "dave", "points": 250},
    ]


def test_rank_change_rewrites_top_users_in_the_same_run(db: ProgramDb, bucket_url: str) -> None:
    fill(db)
    program = make_program(db.program_id)
    run_snapshot(program, db.url, bucket_url, now=NOW)
    db.change("dave", 250, today=250, week=250)
    store = RecordingStore(open_store(join_url(bucket_url, db.program_id)))
    run_snapshot(program, db.url, bucket_url, now=NOW + timedelta(minutes=1), store=store)
    # alice: today 1 -> 2; carol: today 2 -> 3 (both inside today's size of 100).
    assert sorted(k for k in store.puts if k.startswith("users/")) == [
        "users/alice.json",
        "users/bob.json",
        "users/carol.json",
        "users/dave.json",
    ]
    assert read(store, "users/alice.json")["ranks"] == {"overall": 1, "today": 2, "week": 1}


def test_a_user_pushed_out_of_the_top_is_found_by_its_published_rank(db: ProgramDb, tmp_path: Path) -> None:
    # One board of size 1, so the user who drops out is in no current top list: only the
    # published rank (users.published_ranks) says its file shows a top rank.
    program = make_program(db.program_id, boards=[{"id": "champion", "window": "all-time", "size": 1}])
    bucket_url = (tmp_path / "bucket").as_uri()
    db.user("first", 10)
    db.user("second", 5)
    run_snapshot(program, db.url, bucket_url, now=NOW)
    db.change("second", 20)
    store = RecordingStore(open_store(join_url(bucket_url, db.program_id)))
    report = run_snapshot(program, db.url, bucket_url, now=NOW + timedelta(minutes=1), store=store)
    assert sorted(k for k in store.puts if k.startswith("users/")) == [
        "users/first.json",
        "users/second.json",
    ]
    assert report.users_written == 2
    assert read(store, "users/first.json")["ranks"] == {"champion": 2}
    assert db.published()["first"][2] == {"champion": 2}


def test_a_rev_scored_during_the_upload_is_not_marked_published(db: ProgramDb, tmp_path: Path) -> None:
    fill(db)
    program = make_program(db.program_id)
    bucket_url = (tmp_path / "bucket").as_uri()
    bumped = threading.Event()

    def scorer_commits_meanwhile(key: str) -> None:
        if key == "users/bob.json" and not bumped.is_set():
            bumped.set()
            db.change("bob", 210, yesterday=210, week=210)

    store = RecordingStore(
        open_store(join_url(bucket_url, db.program_id)), before_put=scorer_commits_meanwhile
    )
    run_snapshot(program, db.url, bucket_url, now=NOW, store=store)
    assert bumped.is_set()
    rev, published_rev, _ = db.published()["bob"]
    assert (rev, published_rev) == (2, 1)  # the newer rev stays unpublished ...
    assert read(store, "users/bob.json")["points"] == 200

    again = run_snapshot(program, db.url, bucket_url, now=NOW + timedelta(minutes=1))
    assert again.users_written >= 1  # ... so bob is written by the next run
    assert read(store, "users/bob.json")["points"] == 210
    assert db.published()["bob"][:2] == (2, 2)


def test_ranking_mode_has_no_catalog_and_rewards_mode_no_boards(db: ProgramDb, tmp_path: Path) -> None:
    fill(db)
    bucket_url = (tmp_path / "bucket").as_uri()
    store = open_store(join_url(bucket_url, db.program_id))

    run_snapshot(make_program(db.program_id, mode="ranking"), db.url, bucket_url, now=NOW)
    assert store.get("catalog.json") is None
    assert len(store.list("leaderboards/")) == 3

    store.delete_prefix()
    with db.engine.begin() as c:
        c.execute(tables.users.update().values(published_rev=0))
    run_snapshot(make_program(db.program_id, mode="rewards"), db.url, bucket_url, now=NOW)
    assert store.list("leaderboards/") == []
    assert read(store, "catalog.json")["rewards"][0]["remaining"] == 4
    assert read(store, "users/alice.json")["ranks"] == {}
    assert read(store, "manifest.json")["windows"] == {}


def test_ended_program_publishes_its_last_day(db: ProgramDb, tmp_path: Path) -> None:
    program = make_program(db.program_id)
    db.user("last-day", 40)
    with db.engine.begin() as c:
        c.execute(
            tables.board_points.insert().values(window_key="d:2027-01-31", user_id="last-day", points=40)
        )
    bucket_url = (tmp_path / "bucket").as_uri()
    run_snapshot(program, db.url, bucket_url, now=datetime(2027, 3, 1, tzinfo=UTC))
    store = open_store(join_url(bucket_url, db.program_id))
    assert read(store, "leaderboards/today.json")["entries"] == [
        {"rank": 1, "user": "last-day", "points": 40}
    ]
    assert read(store, "manifest.json")["windows"]["today"] == "d:2027-01-31"


def test_the_entry_point_publishes_once(
    db: ProgramDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(db)
    program_file = tmp_path / "program.yaml"
    program_file.write_text(dump_program(make_program(db.program_id)))
    bucket_url = (tmp_path / "bucket").as_uri()
    monkeypatch.setenv("GAMIFY_PROGRAM_FILE", str(program_file))
    monkeypatch.setenv("GAMIFY_DATABASE_URL", db.url)
    monkeypatch.setenv("GAMIFY_BUCKET", bucket_url)

    assert main(["--once"]) == 0
    manifest = read(open_store(join_url(bucket_url, db.program_id)), "manifest.json")
    assert manifest["counts"]["usersWritten"] == 5

    monkeypatch.setenv("GAMIFY_DATABASE_URL", "mysql+pymysql://nobody:wrong@127.0.0.1:3306/nothing")
    assert main(["--once"]) == 1
    monkeypatch.delenv("GAMIFY_PROGRAM_FILE")
    assert main(["--once"]) == 2


def test_periodic_mode_reloads_the_program_and_survives_failures(db: ProgramDb, tmp_path: Path) -> None:
    fill(db)
    bucket_url = (tmp_path / "bucket").as_uri()
    stop = threading.Event()
    calls = 0

    def load() -> Program:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("program file briefly unreadable")
        if calls == 3:
            stop.set()
        return make_program(db.program_id)

    runs = run_periodic(load, db.url, bucket_url, interval_seconds=0.01, stop=stop)
    assert (calls, runs) == (3, 2)
    assert len(db.rows(tables.snapshot_runs)) == 2


def test_a_hostile_user_id_never_writes_outside_the_prefix(db: ProgramDb, tmp_path: Path) -> None:
    # Ingest never accepts such ids; if one reached the table anyway, the run skips it.
    db.user("../../escape", 50)
    db.user("fine", 10)
    bucket = tmp_path / "bucket"
    report = run_snapshot(make_program(db.program_id), db.url, bucket.as_uri(), now=NOW)
    assert report.users_written == 1
    everything = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(path.startswith(f"bucket/{db.program_id}/") for path in everything)
    assert f"bucket/{db.program_id}/users/fine.json" in everything
    assert db.published()["../../escape"][1] == 0  # not marked published
