"""Provisioning against the real servers: JetStream stream and consumer, MariaDB schema, user and
grants, bucket prefix; idempotence, updates, tenant isolation and deletion."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from nats import connect as connect_nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType
from nats.js.errors import NotFoundError

from gamify.db import migrate
from gamify.db.tables import events
from gamify.naming import ProgramNames
from gamify.program import Program, parse_program
from gamify.provisioning import ProvisioningError, deprovision, provision
from gamify.provisioning import mysql as schema
from gamify.provisioning import nats as stream
from gamify.settings import Servers
from tests.conftest import unique_program_id

ACCESS_DENIED_DB = 1044  # no privilege on the database (USE, CREATE DATABASE)
ACCESS_DENIED_LOGIN = 1045
ACCESS_DENIED_TABLE = 1142  # no privilege for this command on the table


def make_program(program_id: str, *, max_age: str = "90d", bucket: str | None = None) -> Program:
    snapshots: dict[str, Any] = {"bucket": bucket} if bucket else {}
    return parse_program(
        {
            "apiVersion": "gamification.io/v1alpha1",
            "kind": "GamificationProgram",
            "metadata": {"name": program_id},
            "spec": {
                "tenant": "acme",
                "schedule": {"start": "2026-01-01T00:00:00Z", "end": "2027-12-31T00:00:00Z"},
                "rules": [{"id": "steps", "event": "activity.steps", "points": 10}],
                "snapshots": snapshots,
                "retention": {"eventsMaxAge": max_age},
            },
        }
    )


@pytest.fixture
def local_servers(servers: Servers, nats_url: str, mysql_admin_url: str, tmp_path: Path) -> Servers:
    """The shared NATS and MariaDB, and a `file://` bucket of this test's own."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    return replace(servers, bucket=bucket.as_uri())


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    connection = await connect_nats(nats_url)
    yield connection.jetstream()
    await connection.close()


@pytest.fixture
def cleanup(nats_url: str, mysql_admin_url: str) -> Iterator[list[str]]:
    """Program ids appended here lose their stream, schema and user after the test."""
    program_ids: list[str] = []
    yield program_ids

    async def drop_streams() -> None:
        connection = await connect_nats(nats_url)
        js = connection.jetstream()
        for program_id in program_ids:
            await stream.delete_stream(js, ProgramNames(program_id))
        await connection.close()

    asyncio.run(drop_streams())
    for program_id in program_ids:
        schema.drop_schema(mysql_admin_url, ProgramNames(program_id))


@contextmanager
def connected(url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def error_code(exc: BaseException) -> int:
    assert isinstance(exc, sa.exc.DBAPIError), repr(exc)
    return int(exc.orig.args[0])  # type: ignore[union-attr]


def login_error(url: str) -> int:
    """The MySQL error code of logging in with `url` (the login must fail)."""
    with pytest.raises(sa.exc.OperationalError) as denied, connected(url):
        pass
    return error_code(denied.value)


def alembic_head() -> str:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def event_row(event_id: str, user: str = "u-1") -> dict[str, Any]:
    now = datetime.now(UTC).replace(tzinfo=None)
    return {
        "event_id": event_id,
        "type": "activity.steps",
        "user_id": user,
        "occurred_at": now,
        "received_at": now,
        "properties": {"steps": 1000},
        "stream_seq": 1,
        "scored_at": now,
    }


# --- stream and consumer ---------------------------------------------------------------------


async def test_stream_and_consumer_have_the_contract_config(js: JetStreamContext, cleanup: list[str]) -> None:
    program_id = unique_program_id("prov")
    cleanup.append(program_id)
    names = ProgramNames(program_id)

    info = await stream.ensure_stream(js, names, timedelta(days=90))
    consumer = await stream.ensure_consumer(js, names)

    config = (await js.stream_info(names.stream)).config
    assert info.config.name == config.name == names.stream == "GAMIFY_" + program_id.upper().replace("-", "_")
    assert config.subjects == [f"gamify.{program_id}.>"]
    assert config.storage == StorageType.FILE
    assert config.retention == RetentionPolicy.LIMITS
    assert config.discard == DiscardPolicy.OLD
    assert config.max_age == timedelta(days=90).total_seconds()
    assert config.duplicate_window == timedelta(hours=1).total_seconds()
    assert config.num_replicas == 1

    found = await js.consumer_info(names.stream, "scoring")
    assert consumer.config == found.config
    assert found.config.durable_name == "scoring"
    assert found.config.deliver_subject is None  # pull consumer
    assert found.config.filter_subject == f"gamify.{program_id}.events.>"
    assert found.config.ack_policy == AckPolicy.EXPLICIT
    assert found.config.deliver_policy == DeliverPolicy.ALL
    assert found.config.ack_wait == 30
    assert found.config.max_deliver == -1
    assert found.config.max_ack_pending == 10_000


async def test_dedupe_on_message_id_and_max_age_update_keeps_events(
    js: JetStreamContext, cleanup: list[str]
) -> None:
    program_id = unique_program_id("prov")
    cleanup.append(program_id)
    names = ProgramNames(program_id)
    await stream.ensure_stream(js, names, timedelta(days=90))

    subject = names.event_subject("activity.steps")
    first = await js.publish(subject, b"{}", headers={"Nats-Msg-Id": "evt-1"})
    again = await js.publish(subject, b"{}", headers={"Nats-Msg-Id": "evt-1"})
    other = await js.publish(subject, b"{}", headers={"Nats-Msg-Id": "evt-2"})
    assert first.duplicate is not True
    assert again.duplicate is True and again.seq == first.seq
    assert other.duplicate is not True

    updated = await stream.ensure_stream(js, names, timedelta(days=30))
    assert updated.config.max_age == timedelta(days=30).total_seconds()
    info = await js.stream_info(names.stream)
    assert info.config.max_age == timedelta(days=30).total_seconds()
    assert info.state.messages == 2  # an update never drops events

    # A max_age shorter than the duplicate window shortens the window (the server requires it).
    short = await stream.ensure_stream(js, names, timedelta(minutes=10))
    assert short.config.duplicate_window == timedelta(minutes=10).total_seconds()


async def test_delete_stream_reports_whether_it_existed(js: JetStreamContext) -> None:
    names = ProgramNames(unique_program_id("prov"))
    await stream.ensure_stream(js, names, timedelta(days=1))
    assert await stream.delete_stream(js, names) is True
    assert await stream.delete_stream(js, names) is False
    with pytest.raises(NotFoundError):
        await js.stream_info(names.stream)


# --- schema, user, grants --------------------------------------------------------------------


def test_a_40_character_program_gets_a_32_character_user_that_signs_in(
    mysql_admin_url: str, cleanup: list[str]
) -> None:
    program_id = unique_program_id("longest-program-id-allowed").ljust(40, "x")
    cleanup.append(program_id)
    names = ProgramNames(program_id)
    url = schema.ensure_schema(mysql_admin_url, names, "pw-" + secrets.token_hex(8))
    assert len(names.db_user) == 32 and sa.make_url(url).username == names.db_user
    with connected(url) as connection:  # MySQL 8 would refuse a longer name at CREATE USER
        assert connection.execute(sa.text("SELECT DATABASE()")).scalar() == names.schema


def test_schema_tables_and_program_user(mysql_admin_url: str, cleanup: list[str]) -> None:
    program_id = unique_program_id("prov")
    cleanup.append(program_id)
    names = ProgramNames(program_id)
    password = "p@ss:w/rd%?#'\"" + secrets.token_hex(4)  # every character a URL must quote

    url = schema.ensure_schema(mysql_admin_url, names, password)

    parsed = sa.make_url(url)
    assert (parsed.username, parsed.password, parsed.database) == (names.db_user, password, names.schema)
    admin = sa.make_url(mysql_admin_url)
    assert (parsed.host, parsed.port) == (admin.host, admin.port or 3306)
    assert schema.schema_exists(mysql_admin_url, names)
    assert migrate.current(url) == alembic_head()
    with connected(url) as connection:
        tables = {row[0] for row in connection.execute(sa.text("SHOW TABLES"))}
        assert {"events", "ledger", "users", "alembic_version"} <= tables
        assert connection.execute(sa.text("SELECT @@collation_database")).scalar() == "utf8mb4_bin"
        # Binary collation: ids differing only in case are different ids.
        connection.execute(events.insert(), [event_row("E-1"), event_row("e-1")])
        connection.commit()
        stored = connection.execute(sa.select(events.c.event_id).order_by(events.c.event_id)).scalars()
        assert list(stored) == ["E-1", "e-1"]
        grants = [row[0] for row in connection.execute(sa.text("SHOW GRANTS"))]
    # USAGE (log in) on the server, privileges on its own schema, nothing else.
    assert len(grants) == 2, grants
    assert grants[0].startswith("GRANT USAGE ON *.*")
    assert f"ON `{names.schema.replace('_', chr(92) + '_')}`.*" in grants[1]


def test_ensure_schema_twice_changes_nothing_and_resets_a_changed_password(
    mysql_admin_url: str, cleanup: list[str]
) -> None:
    program_id = unique_program_id("prov")
    cleanup.append(program_id)
    names = ProgramNames(program_id)
    first = schema.ensure_schema(mysql_admin_url, names, "first-password")
    with connected(first) as connection:
        connection.execute(events.insert(), [event_row("kept")])
        connection.commit()

    assert schema.ensure_schema(mysql_admin_url, names, "first-password") == first

    second = schema.ensure_schema(mysql_admin_url, names, "second-password")
    with connected(second) as connection:
        assert connection.execute(sa.select(events.c.event_id)).scalars().all() == ["kept"]
    assert login_error(first) == ACCESS_DENIED_LOGIN


def test_program_user_cannot_touch_another_programs_schema(mysql_admin_url: str, cleanup: list[str]) -> None:
    token = secrets.token_hex(4)
    # `gamify_a_<token>` as a GRANT pattern would also match `gamify_aa<token>` (`_` is a
    # wildcard there): B is chosen to be exactly that look-alike.
    a, b = f"a-{token}", f"aa{token}"
    cleanup.extend([a, b])
    url_a = schema.ensure_schema(mysql_admin_url, ProgramNames(a), "password-a")
    url_b = schema.ensure_schema(mysql_admin_url, ProgramNames(b), "password-b")
    schema_b = ProgramNames(b).schema
    with connected(url_b) as connection:
        connection.execute(events.insert(), [event_row("secret-of-b")])
        connection.commit()

    with connected(url_a) as connection:
        for statement in (
            f"SELECT * FROM `{schema_b}`.events",
            f"INSERT INTO `{schema_b}`.events (event_id) VALUES ('x')",
            f"DELETE FROM `{schema_b}`.events",
            f"DROP TABLE `{schema_b}`.events",
        ):
            with pytest.raises(sa.exc.DBAPIError) as denied:
                connection.execute(sa.text(statement))
            assert error_code(denied.value) == ACCESS_DENIED_TABLE, statement
        for statement in (
            f"USE `{schema_b}`",
            f"CREATE DATABASE `gamify_{token}`",
            f"CREATE DATABASE `{ProgramNames(a).schema}x`",
            f"DROP DATABASE `{schema_b}`",
        ):
            with pytest.raises(sa.exc.DBAPIError) as denied:
                connection.execute(sa.text(statement))
            assert error_code(denied.value) == ACCESS_DENIED_DB, statement

    other_schema_url = sa.make_url(url_a).set(database=schema_b).render_as_string(False)
    assert login_error(other_schema_url) == ACCESS_DENIED_DB
    with connected(url_b) as connection:
        assert connection.execute(sa.select(events.c.event_id)).scalars().all() == ["secret-of-b"]


def test_unsafe_names_are_refused(mysql_admin_url: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        schema.ensure_schema(mysql_admin_url, ProgramNames("x`; DROP DATABASE mysql; --"), "pw")
    with pytest.raises(ValueError, match="non-empty password"):
        schema.ensure_schema(mysql_admin_url, ProgramNames("fine"), "")


# --- the orchestrator ------------------------------------------------------------------------


async def test_provision_twice_is_idempotent_and_deprovision_retains(
    local_servers: Servers, js: JetStreamContext, cleanup: list[str]
) -> None:
    program = make_program(unique_program_id("prov"))
    cleanup.append(program.name)
    names = ProgramNames(program.name)

    result = await provision(program, local_servers, "db-password")
    stream_before = await js.stream_info(names.stream)
    consumer_before = await js.consumer_info(names.stream, "scoring")
    again = await provision(program, local_servers, "db-password")

    assert again == result
    assert (result.program, result.stream, result.consumer, result.database) == (
        program.name,
        names.stream,
        "scoring",
        names.schema,
    )
    assert "db-password" not in repr(result)
    assert result.snapshot_url == f"{local_servers.bucket}/{program.name}/"
    stream_after = await js.stream_info(names.stream)
    consumer_after = await js.consumer_info(names.stream, "scoring")
    assert stream_after.config == stream_before.config
    assert stream_after.created == stream_before.created
    assert consumer_after.config == consumer_before.config
    assert consumer_after.created == consumer_before.created
    assert migrate.current(result.database_url) == alembic_head()
    prefix = Path(local_servers.bucket.removeprefix("file://")) / program.name
    assert prefix.is_dir()

    # The program's own retention drives the stream; editing it updates the stream.
    await provision(make_program(program.name, max_age="7d"), local_servers, "db-password")
    assert (await js.stream_info(names.stream)).config.max_age == timedelta(days=7).total_seconds()

    await deprovision(program.name, local_servers, local_servers.bucket, delete_data=False)
    assert (await js.stream_info(names.stream)).config.name == names.stream
    assert schema.schema_exists(local_servers.mysql_admin_url, names)
    assert schema.user_exists(local_servers.mysql_admin_url, names)
    assert prefix.is_dir()


async def test_deprovision_with_delete_removes_everything(
    local_servers: Servers, js: JetStreamContext, cleanup: list[str]
) -> None:
    program = make_program(unique_program_id("prov"))
    cleanup.append(program.name)
    names = ProgramNames(program.name)
    result = await provision(program, local_servers, "db-password")
    await js.publish(names.event_subject("activity.steps"), b"{}", headers={"Nats-Msg-Id": "e-1"})
    prefix = Path(local_servers.bucket.removeprefix("file://")) / program.name
    assert any(prefix.iterdir())

    await deprovision(program.name, local_servers, local_servers.bucket, delete_data=True)

    with pytest.raises(NotFoundError):
        await js.stream_info(names.stream)
    assert not schema.schema_exists(local_servers.mysql_admin_url, names)
    assert not schema.user_exists(local_servers.mysql_admin_url, names)
    assert not prefix.exists() or not any(prefix.iterdir())
    assert login_error(result.database_url) == ACCESS_DENIED_LOGIN
    # Deleting what is already gone is fine (the operator retries finalizers).
    await deprovision(program.name, local_servers, local_servers.bucket, delete_data=True)


async def test_provision_with_a_gcs_bucket(
    local_servers: Servers, gcs_bucket: str, gcs_client: Any, cleanup: list[str]
) -> None:
    program = make_program(unique_program_id("prov"), bucket=f"gs://{gcs_bucket}/snapshots")
    cleanup.append(program.name)
    result = await provision(program, local_servers, "db-password")
    assert result.snapshot_url == f"gs://{gcs_bucket}/snapshots/{program.name}/"
    assert [blob.name for blob in gcs_client.list_blobs(gcs_bucket, prefix=f"snapshots/{program.name}/")]


async def test_failures_name_the_component(local_servers: Servers, cleanup: list[str]) -> None:
    program = make_program(unique_program_id("prov"))
    cleanup.append(program.name)

    no_nats = replace(local_servers, nats_url="nats://user:hunter2@127.0.0.1:1")
    with pytest.raises(ProvisioningError) as failed:
        await provision(program, no_nats, "db-password")
    assert failed.value.component == "stream"
    assert "cannot connect to NATS at nats://127.0.0.1:1" in str(failed.value)
    assert "hunter2" not in str(failed.value)

    wrong_admin = sa.make_url(local_servers.mysql_admin_url).set(username="nobody", password="wrong")
    no_mysql = replace(local_servers, mysql_admin_url=wrong_admin.render_as_string(False))
    with pytest.raises(ProvisioningError) as failed:
        await provision(program, no_mysql, "db-password")
    assert failed.value.component == "schema"
    assert str(ACCESS_DENIED_LOGIN) in str(failed.value)
    assert "db-password" not in str(failed.value)

    missing_bucket = make_program(program.name, bucket=f"gs://missing-{secrets.token_hex(6)}")
    with pytest.raises(ProvisioningError) as failed:
        await provision(missing_bucket, local_servers, "db-password")
    assert failed.value.component == "bucket"
