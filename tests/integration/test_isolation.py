"""Two programs side by side on one machine: nothing of one ever appears in the other.

Each attempt to cross the line must fail: A's key on B's ingest, A's database user on B's
schema; and the data of one employee id used in both programs stays apart in the streams,
the schemas and the snapshot prefixes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from gamify import local
from gamify.credentials import generate_password, hash_api_key
from gamify.naming import ProgramNames
from gamify.program import parse_program
from gamify.provisioning import deprovision
from gamify.provisioning import mysql as mysql_provisioning
from gamify.settings import Servers
from gamify.snapshots.writer import run_snapshot
from gamify.storage import InvalidKey, StorageError, join_url, open_store
from tests.conftest import unique_program_id
from tests.programs import program_document, visit_rule


@pytest.fixture
def two_programs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_url: str, mysql_admin_url: str, gcs_bucket: str
) -> Iterator[tuple[local.LocalState, local.LocalState]]:
    monkeypatch.setenv("GAMIFY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GAMIFY_BUCKET", f"gs://{gcs_bucket}")
    monkeypatch.setenv("GAMIFY_SNAPSHOT_INTERVAL", "3600")
    states = []
    start = datetime.now(UTC) - timedelta(days=2)
    for tenant, points in (("acme", 10), ("globex", 7)):
        document = program_document(
            unique_program_id(tenant), start, tenant=tenant, rules=[visit_rule(points)]
        )
        path = tmp_path / f"{tenant}.yaml"
        path.write_text(yaml.safe_dump(document))
        states.append(local.up(path))
    try:
        yield states[0], states[1]
    finally:
        for state in states:
            local.down(state.program)
            # Everything the programs own goes too: stream, schema, user, objects.
            asyncio.run(
                deprovision(state.program, Servers.from_env(), f"gs://{gcs_bucket}", delete_data=True)
            )


def post(state: local.LocalState, key: str, events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(
        f"{state.ingest_url}/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def visits(prefix: str, count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC) - timedelta(minutes=1)
    return [
        {"id": f"{prefix}-{i}", "type": "app.visit", "user": "emp-1", "occurredAt": now.isoformat()}
        for i in range(count)
    ]


async def stream_subjects(nats_url: str, program: str) -> set[str]:
    names = ProgramNames(program)
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        info = await js.stream_info(names.stream)
        subjects = set()
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            subjects.add((await js.get_msg(names.stream, seq)).subject)
        return subjects
    finally:
        await connection.close()


async def stream_event_ids(nats_url: str, program: str) -> list[str]:
    """The event ids (Nats-Msg-Id) of every message in the program's stream."""
    names = ProgramNames(program)
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        info = await js.stream_info(names.stream)
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if seq == 0:
                continue  # an empty stream reports first_seq 0 (or 1) and last_seq 0
            message = await js.get_msg(names.stream, seq)
            ids.append((message.headers or {}).get("Nats-Msg-Id", ""))
        return ids
    finally:
        await connection.close()


def test_programs_never_see_each_other(
    two_programs: tuple[local.LocalState, local.LocalState], nats_url: str
) -> None:
    a, b = two_programs
    # A's key is worthless on B's ingest (and the other way round), whatever its wrapping;
    # so is the hash of B's key (what B's ingest holds): only the key itself opens B.
    for key in (a.api_key, f"{a.api_key} {b.api_key}", hash_api_key(b.api_key), b.api_key[:-1]):
        assert post(b, key, visits("a", 1)).status_code == 401, key
    assert post(a, b.api_key, visits("b", 1)).status_code == 401
    # Nothing of the refused requests reached either stream.
    assert asyncio.run(stream_event_ids(nats_url, a.program)) == []
    assert asyncio.run(stream_event_ids(nats_url, b.program)) == []

    assert post(a, a.api_key, visits("a", 3)).json()["accepted"] == 3
    assert post(b, b.api_key, visits("b", 2)).json()["accepted"] == 2
    for state in (a, b):
        local.wait_scored(state.program)

    # Streams: each holds only its own subjects.
    assert asyncio.run(stream_subjects(nats_url, a.program)) == {f"gamify.{a.program}.events.app.visit"}
    assert asyncio.run(stream_subjects(nats_url, b.program)) == {f"gamify.{b.program}.events.app.visit"}
    assert sorted(asyncio.run(stream_event_ids(nats_url, b.program))) == ["b-0", "b-1"]

    # Schemas: the same employee id has separate totals; each schema holds only its events.
    for state, expected_ids, points in ((a, {"a-0", "a-1", "a-2"}, 30), (b, {"b-0", "b-1"}, 14)):
        engine = create_engine(state.database_url)
        with engine.connect() as connection:
            ids = {row[0] for row in connection.execute(text("SELECT event_id FROM events"))}
            total = connection.execute(text("SELECT points FROM users WHERE user_id='emp-1'")).scalar()
        engine.dispose()
        assert ids == expected_ids
        assert total == points

    # A's database user can neither read nor write B's schema.
    engine = create_engine(a.database_url)
    other = ProgramNames(b.program).schema
    with engine.connect() as connection:
        with pytest.raises((OperationalError, ProgrammingError)) as denied:
            connection.execute(text(f"SELECT * FROM `{other}`.events"))
        assert denied.value.orig.args[0] in (1044, 1142)  # type: ignore[union-attr]
        with pytest.raises((OperationalError, ProgrammingError)):
            connection.execute(text(f"INSERT INTO `{other}`.users (user_id) VALUES ('intruder')"))
    engine.dispose()

    # Snapshots: each program writes under its own prefix only.
    for state, points in ((a, 30), (b, 14)):
        run_snapshot(local.load_program_of(state), state.database_url, state.bucket)
        doc = json.loads(open_store(state.snapshot_url).get("users/emp-1.json") or b"{}")
        assert doc["points"] == points
    root = open_store(a.bucket)
    keys = root.list("")
    assert keys, "nothing published"
    assert all(key.startswith((f"{a.program}/", f"{b.program}/")) for key in keys)
    assert {key.split("/")[0] for key in keys} == {a.program, b.program}


# --- database: twin names that a LIKE-pattern grant would confuse --------------------------------


@pytest.fixture
def twin_schemas(mysql_admin_url: str) -> Iterator[tuple[ProgramNames, str, ProgramNames, str]]:
    """Programs `<p>a-b` and `<p>aab`: schemas `gamify_<p>a_b` and `gamify_<p>aab`.

    In `GRANT ... ON db.*` an unescaped `_` matches any character, so a grant on A's schema
    written naively would also open B's. Yields (A's names, A's URL, B's names, B's URL).
    """
    stem = unique_program_id("lk").replace("-", "")
    a, b = ProgramNames(f"{stem}a-b"), ProgramNames(f"{stem}aab")
    # A's name read as a LIKE pattern (`_` = any one character) matches B's name.
    assert re.fullmatch(a.schema.replace("_", "."), b.schema) and a.schema != b.schema
    try:
        a_url = mysql_provisioning.ensure_schema(mysql_admin_url, a, generate_password())
        b_url = mysql_provisioning.ensure_schema(mysql_admin_url, b, generate_password())
        yield a, a_url, b, b_url
    finally:
        for names in (a, b):
            mysql_provisioning.drop_schema(mysql_admin_url, names)


USER_COLUMNS = "(user_id, points, spent, rev, published_rev, updated_at)"
DENIED = (1044, 1142, 1049)  # no access to the database / table; unknown database (hidden)


def _denied(connection: Any, statement: str) -> int:
    with pytest.raises((OperationalError, ProgrammingError)) as refused:
        connection.execute(text(statement))
    code: int = refused.value.orig.args[0]  # type: ignore[union-attr]
    return code


def test_a_database_user_cannot_reach_its_twin_schema(
    twin_schemas: tuple[ProgramNames, str, ProgramNames, str],
) -> None:
    a, a_url, b, b_url = twin_schemas
    for me, url, other in ((a, a_url, b), (b, b_url, a)):
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                # The allowed path works, so the refusals below are about the other schema.
                connection.execute(text(f"INSERT INTO users {USER_COLUMNS} VALUES ('own',0,0,0,0,NOW())"))
                assert connection.execute(text("SELECT COUNT(*) FROM users")).scalar_one() == 1
                connection.execute(text("CREATE TABLE own_scratch (x INT)"))
                connection.execute(text("DROP TABLE own_scratch"))
                connection.commit()

                attempts = [
                    f"SELECT * FROM `{other.schema}`.users",
                    f"SELECT * FROM `{other.schema}`.events",
                    f"INSERT INTO `{other.schema}`.users {USER_COLUMNS} VALUES ('intruder',9,0,0,0,NOW())",
                    f"UPDATE `{other.schema}`.users SET points = points + 1",
                    f"DELETE FROM `{other.schema}`.ledger",
                    f"CREATE TABLE `{other.schema}`.planted (x INT)",
                    f"DROP TABLE `{other.schema}`.users",
                    f"USE `{other.schema}`",
                    f"CREATE DATABASE `{other.schema}x`",
                ]
                for statement in attempts:
                    assert _denied(connection, statement) in DENIED, statement

                # Not even the names: B's schema and tables are invisible to A's user.
                databases = {row[0] for row in connection.execute(text("SHOW DATABASES"))}
                assert me.schema in databases and other.schema not in databases, databases
                seen = connection.execute(
                    text(
                        "SELECT DISTINCT TABLE_SCHEMA FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA NOT IN ('information_schema')"
                    )
                ).scalars()
                assert me.schema in set(seen) and other.schema not in set(seen)
                for view in ("SCHEMATA", "TABLES", "COLUMNS", "SCHEMA_PRIVILEGES", "TABLE_PRIVILEGES"):
                    column = "SCHEMA_NAME" if view == "SCHEMATA" else "TABLE_SCHEMA"
                    leaked = connection.execute(
                        text(f"SELECT COUNT(*) FROM information_schema.{view} WHERE {column} = :s"),
                        {"s": other.schema},
                    ).scalar_one()
                    assert leaked == 0, view
                grants = " ".join(row[0] for row in connection.execute(text("SHOW GRANTS")))
                assert other.schema not in grants.replace("\\_", "_")
                assert _denied(connection, f"SHOW TABLES FROM `{other.schema}`") in DENIED
        finally:
            engine.dispose()

    # And each schema is as its owner left it: no intruder row, no planted table.
    for url in (a_url, b_url):
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                assert list(connection.execute(text("SELECT user_id FROM users")).scalars()) == ["own"]
                assert "planted" not in set(connection.execute(text("SHOW TABLES")).scalars())
        finally:
            engine.dispose()


# --- object storage: A's writer stays under A's prefix ---------------------------------------------

# Keys a hostile or buggy writer might try, beyond tests/integration/test_storage.py's basics:
# encoded traversal, the sibling's prefix reached from above, absolute and Windows-style paths.
ESCAPE_ATTEMPTS = [
    "../{b}/users/emp-1.json",
    "./../{b}/users/emp-1.json",
    "users/../../{b}/users/emp-1.json",
    "/{b}/users/emp-1.json",
    "//{b}/users/emp-1.json",
    "..\\{b}\\users\\emp-1.json",
    "users/\x00/../../{b}/x.json",
    "users/emp-1.json/",
    "..",
    "users/..",
]
# Encoded or look-alike forms are not traversal: they must stay literal names inside A's prefix.
LITERAL_ATTEMPTS = [
    "%2e%2e/{b}/users/emp-1.json",
    "%2E%2E%2F{b}%2Fusers%2Femp-1.json",
    "..%2f{b}%2fusers%2femp-1.json",
    "%252e%252e/{b}/x.json",
    "\u2024\u2024/{b}/x.json",  # ONE DOT LEADER, looks like ".."
    "\uff0e\uff0e/{b}/x.json",  # FULLWIDTH FULL STOP
]


@pytest.fixture(params=["gs", "file"])
def bucket_base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "gs":
        return f"gs://{request.getfixturevalue('gcs_bucket')}"
    return (tmp_path / "bucket").as_uri()


def _everything(bucket_url: str) -> dict[str, bytes]:
    root = open_store(bucket_url)
    return {key: root.get(key) or b"" for key in root.list()}


def test_a_writer_cannot_leave_its_prefix(bucket_base: str) -> None:
    # B's id starts with A's: a prefix check without the trailing `/` would let A reach B.
    a = unique_program_id("pfx")
    b = f"{a}-b"
    store_a = open_store(join_url(bucket_base, a))
    store_b = open_store(join_url(bucket_base, b))
    store_b.put("users/emp-1.json", b'{"owner":"b"}')
    before = _everything(bucket_base)

    for template in ESCAPE_ATTEMPTS:
        key = template.format(b=b)
        attempts: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
            (store_a.put, (key, b'{"owner":"a"}')),
            (store_a.put_if_absent, (key, b'{"owner":"a"}')),
            (store_a.get, (key,)),
            (store_a.stat, (key,)),
            (store_a.list, (key + "/",)),
            (store_a.delete_prefix, (key + "/",)),
        ]
        for method, arguments in attempts:
            with pytest.raises(InvalidKey):
                method(*arguments)
        # A child store is refused, or rooted inside A (a stray leading `/` is dropped).
        for base in (store_a.base_url, store_a.base_url.rstrip("/")):
            try:
                inside = join_url(base, key)
            except InvalidKey:
                continue
            assert inside.startswith(store_a.base_url), (key, inside)
    assert _everything(bucket_base) == before

    for template in LITERAL_ATTEMPTS:
        store_a.put(template.format(b=b), b'{"owner":"a"}')
    # A listing and a delete of "everything" from A's store see A's objects only.
    assert all(key.startswith("%") or key[0] in "\u2024\uff0e." for key in store_a.list())
    after = _everything(bucket_base)
    assert {k: v for k, v in after.items() if not k.startswith(f"{a}/")} == before
    assert store_b.list() == ["users/emp-1.json"]
    assert store_b.get("users/emp-1.json") == b'{"owner":"b"}'
    assert store_a.delete_prefix("") == len(LITERAL_ATTEMPTS)
    assert _everything(bucket_base) == before


@pytest.mark.parametrize(
    "url",
    [
        "file:///tmp/x/%2e%2e/y",
        "file:///tmp/x/%2E%2E/%2E%2E/etc",
        "file:///tmp/x/../y",
        "file://other-host/tmp/x",
        "gs://bucket/a/../b",
        "gs://bucket/a\\..\\b",
    ],
)
def test_an_encoded_base_url_cannot_point_elsewhere(url: str) -> None:
    with pytest.raises(StorageError):
        open_store(url)


class _StorageSpy:
    """Records every object name the GCS client reads, writes, lists or deletes (calls go
    through to the real emulator; the spy only watches)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from google.cloud.storage.blob import Blob
        from google.cloud.storage.bucket import Bucket

        self.names: list[str] = []
        self.listed: list[str] = []

        def watch_blob(method: str) -> None:
            original = getattr(Blob, method)

            def wrapper(blob: Any, *args: Any, **kwargs: Any) -> Any:
                self.names.append(blob.name)
                return original(blob, *args, **kwargs)

            monkeypatch.setattr(Blob, method, wrapper)

        for method in ("upload_from_string", "download_as_bytes", "delete", "reload", "exists"):
            watch_blob(method)
        list_blobs, get_blob = Bucket.list_blobs, Bucket.get_blob

        def spy_list(bucket: Any, *args: Any, **kwargs: Any) -> Any:
            self.listed.append(kwargs.get("prefix") or "")
            return list_blobs(bucket, *args, **kwargs)

        def spy_get(bucket: Any, name: str, *args: Any, **kwargs: Any) -> Any:
            self.names.append(name)
            return get_blob(bucket, name, *args, **kwargs)

        monkeypatch.setattr(Bucket, "list_blobs", spy_list)
        monkeypatch.setattr(Bucket, "get_blob", spy_get)


def _seed_user(database_url: str, user: str, points: int) -> None:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (user_id, points, spent, rev, published_rev, updated_at) "
                    "VALUES (:u, :p, 0, 1, 0, NOW())"
                ),
                {"u": user, "p": points},
            )
            connection.execute(
                text("INSERT INTO board_points (window_key, user_id, points) VALUES ('w:2027-W01', :u, :p)"),
                {"u": user, "p": points},
            )
    finally:
        engine.dispose()


def test_a_snapshot_run_never_lists_or_touches_another_programs_objects(
    monkeypatch: pytest.MonkeyPatch, mysql_admin_url: str, gcs_bucket: str, gcs_client: Any
) -> None:
    a = unique_program_id("snp")
    b = f"{a}-b"  # shares A's id as the start of its prefix
    names = ProgramNames(a)
    program = parse_program(program_document(a, datetime.now(UTC) - timedelta(days=2)))
    bucket_url = f"gs://{gcs_bucket}"
    store_b = open_store(join_url(bucket_url, b))
    for key in ("manifest.json", "users/emp-1.json", "leaderboards/overall.json"):
        store_b.put(key, b'{"owner":"b"}')
    generations_b = {blob.name: blob.generation for blob in gcs_client.list_blobs(gcs_bucket)}
    try:
        database_url = mysql_provisioning.ensure_schema(mysql_admin_url, names, generate_password())
        _seed_user(database_url, "emp-1", 30)
        spy = _StorageSpy(monkeypatch)
        report = run_snapshot(program, database_url, bucket_url)
    finally:
        mysql_provisioning.drop_schema(mysql_admin_url, names)
    assert report.users_written == 1
    assert spy.names, "the spy saw no object access"
    assert all(name.startswith(f"{a}/") for name in spy.names), spy.names
    assert all(prefix.startswith(f"{a}/") for prefix in spy.listed), spy.listed
    after = {blob.name: blob.generation for blob in gcs_client.list_blobs(gcs_bucket)}
    assert {name: gen for name, gen in after.items() if name.startswith(f"{b}/")} == generations_b
    assert json.loads(open_store(join_url(bucket_url, a)).get("users/emp-1.json") or b"{}")["points"] == 30
    assert store_b.get("users/emp-1.json") == b'{"owner":"b"}'
